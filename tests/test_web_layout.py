"""Every page of the site, in headless Chromium at a phone's width (375 x 800) and a laptop's
(1280 x 800): the document is never wider than the window (no horizontal scrolling), with a
history full of long references, a purchase left pending and payments not configured. Each
page's screenshot is saved under tests/artifacts/layout-<page>-<width>.png."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, expect

from accounts.models import User
from billing.models import CreditPack, Purchase
from billing.serializers import encode_cursor
from billing.services.ledger import Actor, debit_create, hold_capture, hold_create
from billing.signup import user_signup
from config.urls import web_pages
from tests.billing.factories import give
from tests.billing.stripe_support import pending_purchase
from tests.browser_support import chromium, offline_page, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WIDTHS = (375, 1280)
SERVICE = Actor("service", "1")
# A reference as long as the API takes, with no place to break a line.
LONG_REFERENCE = "job-" + "x" * 251


@pytest.fixture
def site(live_server, settings) -> dict[str, str]:
    """The pages to visit, by URL pattern name: path and who looks (a user, or nobody)."""
    settings.STRIPE_SECRET_KEY = ""  # payments not configured
    pack, _ = CreditPack.objects.get_or_create(
        slug="credits-115", defaults={"name": "115 credits", "credits": 115, "price_cents": 1500, "currency": "usd"}
    )
    user = user_signup(email="a.rather.long.address.for.a.phone@example-company.com", password="correct-horse")
    account = user.account
    give(account, 200, now=timezone.now() - timedelta(days=1))
    for n in range(12):
        debit_create(
            account=account, credits=None, operation="generation", reference=f"{LONG_REFERENCE[:200]}{n}", actor=SERVICE
        )
    hold = hold_create(
        account=account, credits=5, operation="edit", reference=LONG_REFERENCE, expires_in=900, actor=SERVICE
    )
    hold_capture(hold=hold, credits=3, actor=SERVICE)
    debit_create(account=account, credits=2, reference=LONG_REFERENCE, actor=SERVICE)
    stale = pending_purchase(pack, account=account, flow="checkout")
    # An id of the widest letters, so that a page showing it fits whatever id a purchase draws.
    wide_id = "pur_" + "W" * 20
    Purchase.objects.filter(pk=stale.pk).update(created_at=datetime.now(UTC) - timedelta(hours=2), public_id=wide_id)
    oldest = account.ledger_entries.order_by("id")[2]
    return {"user": user.email, "purchase": wide_id, "cursor": encode_cursor(oldest.pk)}


def pages(site: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """name -> (path, signed in). A page that only takes a POST is its GET's 405 page."""
    purchase = site["purchase"]
    return {
        "web-home": ("/", True),
        "web-signup": ("/signup", False),
        "web-login": ("/login", False),
        "web-logout": ("/logout", True),
        "web-waitlist": ("/waitlist", False),
        "web-verify-email": ("/verify-email", True),
        "web-verify-email-send": ("/verify-email/send", True),
        "web-billing": ("/billing", True),
        "web-billing-older": (f"/billing?before={site['cursor']}", True),
        "web-buy": ("/billing/buy", True),
        "web-checkout-success": (f"/billing/success?purchase={purchase}", True),
        "web-checkout-cancel": (f"/billing/cancel?purchase={purchase}", True),
        "web-notifications": ("/billing/notifications", True),
        "web-auto-recharge": ("/billing/auto-recharge", True),
        "web-auto-recharge-card": ("/billing/auto-recharge/card", True),
        "web-auto-recharge-card-saved": ("/billing/auto-recharge/card-saved", True),
        "not-found": ("/no/such/page", False),
        "missing-purchase": ("/billing/success?purchase=pur_nosuchpurchase", True),
    }


def sign_in(browser: Browser, base_url: str, email: str, width: int) -> tuple:
    blocked: list[str] = []
    page = offline_page(browser, width, 800, blocked)
    client = Client()
    client.force_login(User.objects.get(email=email))
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}])
    return page, blocked


def test_every_page_fits_a_phone_and_a_laptop_screen(live_server, site, monkeypatch):
    visits = pages(site)
    names = {pattern.name for pattern in web_pages}
    assert names <= set(visits), f"pages not visited: {sorted(names - set(visits))}"
    too_wide = []
    with chromium(monkeypatch) as browser:
        for width in WIDTHS:
            anonymous, blocked_anonymous = offline_page(browser, width, 800, []), []
            signed_in, blocked = sign_in(browser, live_server.url, site["user"], width)
            for name, (path, as_user) in visits.items():
                page = signed_in if as_user else anonymous
                page.goto(f"{live_server.url}{path}")
                expect(page.locator("h1").first).to_be_visible(timeout=30_000)
                document = page.evaluate("document.documentElement.scrollWidth")
                body = page.evaluate("document.body.scrollWidth")
                inner = page.evaluate("window.innerWidth")
                if max(document, body) > inner:
                    too_wide.append((name, width, document, body, inner))
                screenshot(page, f"layout-{name}-{width}")
            assert blocked == [] and blocked_anonymous == []
    assert too_wide == [], too_wide


def test_the_billing_page_at_a_phone_width_reads_in_the_users_words(live_server, site, monkeypatch):
    with chromium(monkeypatch) as browser:
        page, _ = sign_in(browser, live_server.url, site["user"], 375)
        page.goto(f"{live_server.url}/billing")
        expect(page.get_by_test_id("payments-off")).to_have_text(
            "Buying credits is not available yet. Your free credits keep arriving every month."
        )
        history = page.get_by_test_id("history")
        expect(history).to_contain_text("Edit: 3 reserved credits used")
        expect(history).to_contain_text("Edit: returned")
        expect(history).to_contain_text("Generation")
        expect(page.get_by_test_id("pending-hint")).to_contain_text("Not completed: nothing was charged")
        page.goto(f"{live_server.url}/billing/buy")
        expect(page.get_by_role("heading", name="This page does not work that way")).to_be_visible(timeout=30_000)
        page.goto(f"{live_server.url}/billing/success?purchase={site['purchase']}")
        expect(page.get_by_test_id("pending-guidance")).to_contain_text(site["purchase"])
