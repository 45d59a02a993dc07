"""The API docs (Swagger UI and ReDoc) render with every request off this machine aborted: their
scripts and styles are drf-spectacular-sidecar's files, served by the application itself."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser_support import chromium, offline_page, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_swagger_ui_shows_the_operations_offline(live_server, monkeypatch):
    blocked: list[str] = []
    with chromium(monkeypatch) as browser:
        page = offline_page(browser, 1280, 900, blocked)
        page.goto(f"{live_server.url}/api/docs/")
        debits = page.locator(".opblock-summary-path", has_text="/api/v1/accounts/{account_id}/debits")
        expect(debits.first).to_be_visible(timeout=30_000)
        assert page.locator(".opblock").count() >= 20
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/operations")).to_be_visible(timeout=30_000)
        screenshot(page, "docs-swagger-offline", full_page=False)
    assert blocked == []


def test_redoc_shows_the_operations_offline(live_server, monkeypatch):
    blocked: list[str] = []
    with chromium(monkeypatch) as browser:
        page = offline_page(browser, 1280, 900, blocked)
        page.goto(f"{live_server.url}/api/redoc/")
        expect(page.get_by_role("heading", name="Credit billing API").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Spend credits now", exact=False).first).to_be_attached(timeout=30_000)
        screenshot(page, "docs-redoc-offline", full_page=False)
    assert blocked == []
