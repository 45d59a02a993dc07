"""The web pages driven in headless Chromium (Playwright) against pytest-django's live server.

A buyer signs up, sees 50 free credits, clicks "Buy 115 credits for $15": our view creates a
Checkout Session at a small Stripe-shaped HTTP server started by this test (STRIPE_API_BASE
points at it, as it would at localstripe, which has no Checkout Sessions) and the browser
follows our 303 to the session's `url`, a stand-in checkout page on that server. Paying there
returns the browser to our success page (from CHECKOUT_SUCCESS_URL), which shows the purchase
as processing until the signed `checkout.session.completed` event reaches /stripe/webhook;
after a refresh it shows paid, and the billing page shows 165 credits with each lot's expiry.

Chromium is Debian's (tests/browser_support.py). Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import html
import itertools
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from dateutil.relativedelta import relativedelta
from playwright.sync_api import Page, expect

from accounts.models import User
from billing.models import CreditPack, Grant, Purchase, StripeEvent
from tests.billing.period_oracle import boundary_at_or_before, period_at
from tests.billing.stripe_support import SECRET_KEY, WEBHOOK_SECRET, event, session_object, sign
from tests.browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, chromium  # noqa: F401 - others import these
from tests.browser_support import screenshot as save_screenshot

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EMAIL = "browser.buyer@example.com"
PASSWORD = "correct-horse-battery"


# --- A Stripe-shaped API server for the two calls the buy button makes --------------------------


@dataclass
class FakeStripe:
    """Answers POST /v1/customers and POST /v1/checkout/sessions as Stripe does (form-encoded
    in, JSON out), records what it was sent, and serves each session's hosted page at its `url`."""

    url: str = ""
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def handle_post(self, path: str, headers: dict[str, str], params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, headers, params))
        if headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        if path == "/v1/customers":
            return 200, {"id": f"cus_fake{next(self._ids)}", "object": "customer", "email": params.get("email")}
        if path == "/v1/checkout/sessions":
            session_id = f"cs_test_fake{next(self._ids)}"
            self.sessions[session_id] = params
            return 200, {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "open",
                "payment_status": "unpaid",
                "payment_intent": None,
                "client_reference_id": params.get("client_reference_id"),
                "url": f"{self.url}/c/pay/{session_id}",
            }
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({path})"}}

    def hosted_page(self, path: str) -> str | None:
        """The stand-in for Stripe's hosted checkout page: a Pay link to the success URL."""
        params = self.sessions.get(path.removeprefix("/c/pay/"))
        if params is None:
            return None
        amount = int(params["line_items[0][price_data][unit_amount]"])
        return (
            '<!doctype html><html lang="en"><title>Checkout (test stand-in)</title><main>'
            f"<h1>Pay {amount // 100}.{amount % 100:02d} {params['line_items[0][price_data][currency]'].upper()}</h1>"
            f"<p>{html.escape(params['line_items[0][price_data][product_data][name]'])}</p>"
            f'<p><a href="{html.escape(params["success_url"])}">Pay</a> '
            f'<a href="{html.escape(params["cancel_url"])}">Back</a></p></main></html>'
        )


def _handler(stripe_api: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            params = dict(parse_qsl(body, keep_blank_values=True))
            status, answer = stripe_api.handle_post(urlsplit(self.path).path, dict(self.headers.items()), params)
            self._send(status, "application/json", json.dumps(answer))

        def do_GET(self) -> None:  # noqa: N802
            page = stripe_api.hosted_page(urlsplit(self.path).path)
            self._send(200 if page else 404, "text/html; charset=utf-8", page or "not found")

        def _send(self, status: int, content_type: str, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_fake")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            pass

    return Handler


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    stripe_api = FakeStripe()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stripe_api))
    stripe_api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stripe_api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def shop(live_server, fake_stripe, settings) -> str:
    """Payments configured against the fake Stripe; Checkout returns to the live server."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake_stripe.url
    settings.CHECKOUT_SUCCESS_URL = f"{live_server.url}/billing/success?purchase={{PURCHASE_ID}}"
    settings.CHECKOUT_CANCEL_URL = f"{live_server.url}/billing/cancel?purchase={{PURCHASE_ID}}"
    # Transactional tests empty every table, the seeded pack too.
    CreditPack.objects.get_or_create(
        slug="credits-115", defaults={"name": "115 credits", "credits": 115, "price_cents": 1500, "currency": "usd"}
    )
    return live_server.url


@pytest.fixture
def page(monkeypatch) -> Iterator[Page]:
    with chromium(monkeypatch) as browser:
        context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="en-US")
        context.set_default_timeout(15_000)
        yield context.new_page()


def screenshot(page: Page, name: str) -> None:
    save_screenshot(page, f"web-{name}")


def deliver_webhook(base_url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST an event signed exactly as Stripe signs it to our running server's webhook."""
    body = json.dumps(payload)
    request = urllib.request.Request(
        f"{base_url}/stripe/webhook",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def lot_row(page: Page, source: str) -> str:
    return " ".join(page.get_by_test_id(f"lot-{source}").inner_text().split())


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def test_sign_up_buy_a_pack_through_checkout_and_see_165_credits_with_their_expiry(shop, fake_stripe, page):
    # Sign up: a mistake is shown next to its field; then 50 free credits.
    page.goto(f"{shop}/signup")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD + "typo")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_contain_text("Please correct the fields marked below.")
    again = page.get_by_label("Password again")
    expect(again).to_have_attribute("aria-invalid", "true")
    expect(again).to_have_accessible_description("The two passwords differ.")
    screenshot(page, "0-signup-error")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    again.fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(f"{shop}/billing")
    expect(page.get_by_test_id("available")).to_have_text("50")
    expect(page.get_by_test_id("free")).to_have_text("50")
    expect(page.get_by_test_id("paid")).to_have_text("0")
    screenshot(page, "1-billing-after-signup")

    # Buy: our view opens a Checkout Session and the browser follows the 303 to its url.
    page.get_by_role("button", name="Buy 115 credits for $15").click()
    expect(page.get_by_role("heading", name="Pay 15.00 USD")).to_be_visible()
    assert page.url.startswith(f"{fake_stripe.url}/c/pay/cs_test_fake")
    purchase = Purchase.objects.get(account__user__email=EMAIL)
    assert (purchase.status, purchase.stripe_checkout_session_id) == ("pending", page.url.rsplit("/", 1)[1])
    sent = [
        (path, headers, params) for path, headers, params in fake_stripe.requests if path == "/v1/checkout/sessions"
    ]
    ((_, headers, params),) = sent
    assert headers["Idempotency-Key"] == f"checkout-{purchase.public_id}"
    assert params["client_reference_id"] == params["metadata[purchase]"] == purchase.public_id
    assert params["line_items[0][price_data][unit_amount]"] == "1500"
    screenshot(page, "2-checkout-stand-in")

    # Back on our success page before Stripe's event arrived: processing.
    page.get_by_role("link", name="Pay").click()
    expect(page).to_have_url(f"{shop}/billing/success?purchase={purchase.public_id}")
    expect(page.get_by_role("heading", name="Processing your payment")).to_be_visible()
    expect(page.get_by_test_id("purchase-status")).to_have_text("Pending")
    screenshot(page, "3-success-processing")

    # Stripe's signed checkout.session.completed reaches the webhook; a refresh shows paid.
    session = session_object(purchase, id=purchase.stripe_checkout_session_id, payment_intent="pi_fake_browser")
    receipt = deliver_webhook(shop, event("checkout.session.completed", session))
    assert receipt["status"] == "processed", receipt
    page.get_by_role("link", name="Refresh this page").click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.get_by_test_id("purchase-status")).to_have_text("Paid")
    screenshot(page, "4-success-paid")

    # The billing page: 165 credits, each lot with its expiry.
    page.get_by_role("link", name="Back to billing").click()
    expect(page.get_by_test_id("available")).to_have_text("165")
    expect(page.get_by_test_id("free")).to_have_text("50")
    expect(page.get_by_test_id("paid")).to_have_text("115")
    user = User.objects.get(email=EMAIL)
    purchase.refresh_from_db()
    assert purchase.status == "paid" and purchase.paid_at is not None
    # Free credits lapse when the next monthly period starts (periods run from the signup day,
    # the 28th at the latest); purchased ones 12 calendar months after payment.
    joined = user.date_joined.astimezone(UTC)
    anchor = min(joined.day, 28)
    next_period = period_at(first_period_start=boundary_at_or_before(joined, anchor), anchor_day=anchor, now=joined).end
    paid_expiry = purchase.paid_at.astimezone(UTC) + relativedelta(years=1)
    assert lot_row(page, "free_monthly") == f"Free monthly credits 50 {when(next_period)}"
    assert lot_row(page, "purchase") == f"Purchased credits 115 {when(paid_expiry)}"
    grants = {g.source: g for g in Grant.objects.filter(account__user=user)}
    assert grants["free_monthly"].expires_at == next_period and grants["purchase"].expires_at == paid_expiry
    purchases_table = page.get_by_role("table").filter(has_text="Your most recent purchases")
    expect(purchases_table.get_by_role("row").nth(1)).to_contain_text("115 $15 Paid")
    expect(page.get_by_role("table").filter(has_text="Every change").get_by_role("row").nth(1)).to_contain_text(
        f"Purchased credits +115 165 {purchase.public_id}"
    )
    assert StripeEvent.objects.get().status == "processed"
    screenshot(page, "5-billing-after-purchase")
