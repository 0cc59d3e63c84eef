"""``/docs`` in a real browser with no network but the service: authorize, then execute.

Debian's chromium drives the page (``tests/browser/ensure_chromium.sh`` installs it; CI runs
that script), through Playwright's Python package with ``executable_path``, never a browser
Playwright downloads. Every request the page makes to anything but 127.0.0.1 is aborted and
recorded, so the test proves the page needs nothing from the internet.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest

from tests.conftest import unavailable
from tests.support.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Route

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        unavailable("chromium is not installed (tests/browser/ensure_chromium.sh installs it)")
    return CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))


@pytest.fixture
def server() -> Iterator[tuple[LiveServer, str]]:
    live = LiveServer({}, workers=1)
    try:
        admin_key = live.create_admin_key()
        live.start()
        yield live, admin_key
    finally:
        live.close()


def _status_of_execution(operation: Locator) -> str:
    """Expand an operation, "Try it out" with its pre-filled values, "Execute": the status."""
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody tr.response td.response-col_status")
    sync_api.expect(status).to_have_text(re.compile(r"^\s*\d{3}"), timeout=TIMEOUT_MS)
    return status.inner_text().strip()[:3]


def test_docs_page_works_offline_authorizes_and_executes(
    chromium: Path, server: tuple[LiveServer, str], tmp_path: Path
) -> None:
    live, admin_key = server
    blocked: list[str] = []

    def only_the_service(route: Route) -> None:
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2000})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", only_the_service)
            page.goto(f"{live.base_url}/docs", wait_until="networkidle")

            page.locator("button.authorize").first.click()
            page.locator(".auth-container input").first.fill(admin_key)
            page.locator(".auth-btn-wrapper button.authorize").click()
            page.locator(".auth-btn-wrapper button.btn-done").click()

            me_status = _status_of_execution(page.locator("#operations-me-read_me_v1_me_get"))
            create_status = _status_of_execution(
                page.locator("#operations-keys-create_key_v1_keys_post")
            )
            screenshot = tmp_path / "docs.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot of /docs: {screenshot}")
        finally:
            browser.close()

    assert me_status == "200"
    assert create_status == "201"
    assert blocked == [], f"the page reached past the service: {blocked}"
    names = [key["name"] for key in live.get("/v1/keys", api_key=admin_key).json()["keys"]]
    assert "game-server" in names, "the pre-filled example created the key"
