"""``/docs`` and ``/redoc`` served with their own assets, so they work without internet access.

FastAPI's default pages load Swagger UI and ReDoc from a CDN: on a machine without internet
access (an air-gapped deployment, an operator's laptop on a locked-down network) ``/docs`` is a
blank page. The assets come from the ``fastapi-offline`` package (Swagger UI, ReDoc and a
favicon, under its MIT licence) and are served from ``/static/docs/``; the pages are FastAPI's own
HTML pointed at them. Nothing on either page reaches past the service itself.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
STATIC_DOCS_URL = "/static/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_dir() -> Path:
    """The installed folder holding the Swagger UI and ReDoc assets."""
    return Path(str(files("fastapi_offline").joinpath("static")))


def _asset(request: Request, name: str) -> str:
    """An asset's URL, honouring a ``root_path`` when the service runs behind a prefix."""
    return f"{request.scope.get('root_path', '')}{STATIC_DOCS_URL}/{name}"


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add ``/docs`` and ``/redoc``; the app has ``docs_url=None``."""
    app.mount(STATIC_DOCS_URL, StaticFiles(directory=assets_dir()), name="static-docs")
    title = app.title

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=_asset(request, "swagger-ui.css"),
            swagger_favicon_url=_asset(request, "favicon.png"),
            # Swagger UI would otherwise send the document to an online validator.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=_asset(request, "redoc.standalone.js"),
            redoc_favicon_url=_asset(request, "favicon.png"),
            with_google_fonts=False,
        )
