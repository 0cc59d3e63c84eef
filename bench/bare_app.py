"""A bare FastAPI app: one route, no middleware, nothing of ours. The ceiling for ``/healthz``.

Served by ``bench.servers.BareAppServer`` with gunicorn and ``uvicorn_worker.UvicornWorker``,
the same worker count as ``game-api serve``, so ``/healthz`` on our server against this one's is
the price of everything our app adds around a trivial route (its middleware, routing over more
routes, the error handlers). The route has the same signature and return annotation as ours.
OpenTelemetry hooks are off as in ``app.main.create_app``, so they are not counted against
the bare app.
"""

# No ``from __future__ import annotations``, as in app/api/health.py: the same live annotation.

from fastapi import FastAPI

app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


@app.get("/healthz")
async def livez() -> dict[str, str]:
    """200 whenever the process can answer at all."""
    return {"status": "ok"}
