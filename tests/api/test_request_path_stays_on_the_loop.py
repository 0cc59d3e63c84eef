"""Key routes resolve their dependencies on the event loop, never through the thread pool.

A synchronous dependency (such as a bare ``Provide`` marker) costs a thread hand-off on every
request; on ``/v1/me`` that was a quarter of the event loop's time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi.dependencies.utils as dependency_utils
import pytest

from tests.api.conftest import Api


async def test_authenticated_routes_make_no_thread_pool_call(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    offloaded: list[str] = []
    run_in_threadpool = dependency_utils.run_in_threadpool

    async def spy(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        offloaded.append(getattr(function, "__qualname__", repr(function)))
        return await run_in_threadpool(function, *args, **kwargs)

    monkeypatch.setattr(dependency_utils, "run_in_threadpool", spy)

    assert (await api.client.get("/v1/me", headers=api.auth())).status_code == 200
    assert (await api.client.get("/v1/keys", headers=api.auth())).status_code == 200

    assert offloaded == []
