"""An ``X-Worker-Id`` response header naming the process that answered (``EXPOSE_WORKER_ID``).

Multi-worker tests need to know which gunicorn worker served a request to prove a property for
every worker rather than hope the kernel spread the connections. A plain ASGI middleware, so
it costs one tuple append per response.
"""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

WORKER_ID_HEADER = "x-worker-id"


class WorkerIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._header = (WORKER_ID_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_worker_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self._header]
            await send(message)

        await self._app(scope, receive, send_with_worker_id)
