"""Real servers and a real, headless browser (Debian's chromium driven by Playwright) for the live view tests.

Without /usr/bin/chromium the browser tests are skipped with that reason; ``CAM_SERVER_REQUIRE_BROWSER=1`` (CI) makes
the skip a failure. A fresh temporary profile per run (Playwright's default), no network but loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import RunningServer, ServerPair

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}


def require_browser() -> None:
    """Skip (or fail, with CAM_SERVER_REQUIRE_BROWSER=1) without a chromium to drive."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"the live view tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the live view tests need Playwright for Python (pip install playwright; the test extra)"
    if reason is None:
        return
    if os.environ.get("CAM_SERVER_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (CAM_SERVER_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def servers(servers: ServerPair) -> tuple[RunningServer, RunningServer]:
    """The session's shared pair (the root ``servers``: no instance running at the module's start and end), as
    (camera, pipeline): the view needs no server of its own, and a fresh pair would also wait for its fork server."""
    return servers.camera, servers.pipeline
