"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright
(`make chromium`; `playwright install` is never needed). Screenshots go to tests/artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connections
from playwright.sync_api import Browser, Page, Route, sync_playwright

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
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@contextmanager
def chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}. Install Debian's chromium and chromium-driver "
            "packages with `make chromium` (`make install` and `make test` run it); never `playwright install`."
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an asyncio loop on this thread, which Django's guard takes for
    # async code; the test's own queries are plain synchronous ones. Undone when the test ends.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Queries made inside opened a connection in Playwright's context; close it here, or
            # it outlives the test and its database.
            connections.close_all()


def offline_page(browser: Browser, width: int, height: int, blocked: list[str]) -> Page:
    """A page whose requests to anything but this machine are aborted (and listed in `blocked`)."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    context.set_default_timeout(15_000)

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    return context.new_page()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
