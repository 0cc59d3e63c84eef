"""Containers built by a test from a config file, torn down after it.

Wiring is process-global, so every container a test builds is unwired, its singletons reset and
its overrides dropped on teardown. The repository is the in-memory one: these helpers serve tests
about cache wiring (the SQL repository has tests of its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.container import Container, build_container
from app.repositories.memory import InMemoryApiKeyRepository, InMemoryEventLog
from configs import CONFIG_DIR, load_settings


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    built: list[Container] = []
    yield built
    for container in built:
        container.unwire()
        container.reset_singletons()
        container.reset_override()


def make_container(containers: list[Container], config_file: str | None = None) -> Container:
    """A container from ``configs/<config_file>`` (or the defaults), torn down after the test."""
    path = None if config_file is None else CONFIG_DIR / config_file
    container = build_container(load_settings(path))
    repository = InMemoryApiKeyRepository()
    container.apikey_repository.override(repository)
    container.event_log.override(InMemoryEventLog(repository))
    containers.append(container)
    return container
