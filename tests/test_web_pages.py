"""The end users' HTML pages through Django's test client: sign up, log in and out, the billing
page, the buy button and the pages Checkout returns to. Stripe is answered at the stripe
library's HTTP-client boundary (tests/billing/stripe_support.py); nothing of ours is replaced.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client

from accounts.models import Account, User
from billing.models import CreditPack, Grant, LedgerEntry, Purchase
from billing.services import stripe_gateway
from billing.services.ledger import debit_create
from billing.services.purchases import StripeRefs, purchase_cancel, purchase_fulfil
from billing.signup import user_signup
from tests.billing.factories import STAFF, give
from tests.billing.stripe_support import Recorded, RecordingHTTPClient, pending_purchase

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
CHECKOUT = "/v1/checkout/sessions"
SIGNED_UP_AT = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
# Within the first free-credit period of a user who signed up at SIGNED_UP_AT (anchor day 10).
TODAY = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
PAID_AT = datetime(2026, 3, 15, 14, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def business_time(time_machine):
    time_machine.move_to(TODAY, tick=False)
    return time_machine


@pytest.fixture
def payments_on(stripe_keys):
    settings = stripe_keys
    settings.CHECKOUT_SUCCESS_URL = "https://app.example/billing/success?purchase={PURCHASE_ID}"
    settings.CHECKOUT_CANCEL_URL = "https://app.example/billing/cancel?purchase={PURCHASE_ID}"
    return settings


@pytest.fixture
def payments_off(settings):
    settings.STRIPE_SECRET_KEY = ""
    return settings


def answer_session(request: Recorded) -> tuple[int, dict]:
    ref = request.params["client_reference_id"]
    return 200, {
        "id": f"cs_test_{ref}",
        "object": "checkout.session",
        "url": f"https://checkout.stripe.com/c/pay/cs_test_{ref}",
        "payment_intent": None,
        "status": "open",
    }


@pytest.fixture
def stripe_up(payments_on, monkeypatch) -> RecordingHTTPClient:
    recorder = RecordingHTTPClient()
    recorder.on("post", "/v1/customers", (200, {"id": "cus_test_web", "object": "customer"}))
    recorder.on("post", CHECKOUT, answer_session)
    monkeypatch.setattr(stripe_gateway, "HTTP_CLIENT", recorder)
    return recorder


@pytest.fixture
def user() -> User:
    return user_signup(email="buyer@example.com", password=PASSWORD, now=SIGNED_UP_AT)


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response) -> str:  # type: ignore[no-untyped-def]
    """The page's visible text, whitespace collapsed, for assertions on what a reader sees."""
    html = response.content.decode()
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def paid_purchase(user: User, pack: CreditPack, *, paid_at: datetime) -> Purchase:
    purchase = pending_purchase(pack, account=user.account, flow="checkout")
    assert purchase_fulfil(
        purchase=purchase, refs=StripeRefs(), paid_cents=pack.price_cents, currency="usd", now=paid_at
    )
    return purchase


# --- Sign up, log in, log out -------------------------------------------------------------------


def test_signup_page_renders_a_labelled_form():
    response = Client().get("/signup")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<html lang="en">' in html and "<main" in html
    for field in ("email", "password", "password_again"):
        assert f'<label for="id_{field}">' in html
        assert f'id="id_{field}"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_signup_creates_the_user_through_the_service_with_50_free_credits_and_logs_in():
    client = Client()

    response = client.post(
        "/signup", {"email": " New.Buyer@Example.com ", "password": PASSWORD, "password_again": PASSWORD}
    )

    assert response.status_code == 302 and response.url == "/billing"
    user = User.objects.get(email="new.buyer@example.com")
    (grant,) = Grant.objects.filter(account__user=user)
    assert (grant.source, grant.amount) == ("free_monthly", 50)
    page = client.get("/billing")
    assert page.status_code == 200
    assert "50 credits" in text(page) and "Free: 50" in text(page) and "Paid: 0" in text(page)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "password_again": PASSWORD}, "email", "valid email"),
        ({"email": "a@example.com", "password": "short", "password_again": "short"}, "password", "at least 8"),
        (
            {"email": "a@example.com", "password": PASSWORD, "password_again": PASSWORD + "x"},
            "password_again",
            "differ",
        ),
        ({"email": "BUYER@example.com", "password": PASSWORD, "password_again": PASSWORD}, "email", "already exists"),
        ({"email": "a" * 250 + "@example.com", "password": PASSWORD, "password_again": PASSWORD}, "email", "254"),
        ({"email": "a@example.com", "password": "x" * 129, "password_again": "x" * 129}, "password", "at most 128"),
        ({"email": "a\x00@example.com", "password": PASSWORD, "password_again": PASSWORD}, "email", "Null"),
        ({"password": PASSWORD}, "email", "required"),
        ({"email": ["a@example.com", "b@example.com"], "password": PASSWORD}, "password_again", "required"),
    ],
)
def test_signup_refuses_bad_input_with_a_form_error(user, data, field, message):
    users_before = User.objects.count()

    response = Client().post("/signup", data)

    assert response.status_code == 400
    html = response.content.decode()
    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', html, flags=re.S)
    assert errors and message in errors.group(1), html
    assert 'aria-invalid="true"' in html
    assert User.objects.count() == users_before


def test_login_takes_the_email_in_any_case_and_logout_needs_a_post(user):
    client = Client()

    response = client.post("/login", {"username": "Buyer@Example.COM", "password": PASSWORD})
    assert response.status_code == 302 and response.url == "/billing"
    assert client.get("/billing").status_code == 200

    assert client.get("/logout").status_code == 405  # a link or prefetch logs nobody out
    assert client.get("/billing").status_code == 200
    response = client.post("/logout")
    assert response.status_code == 302 and response.url == "/login"
    assert client.get("/billing").status_code == 302


@pytest.mark.parametrize(
    "data",
    [
        {"username": "buyer@example.com", "password": "wrong-password"},
        {"username": "nobody@example.com", "password": PASSWORD},
        {"username": "x" * 5000, "password": PASSWORD},
        {"username": "buyer@example.com"},
        {},
    ],
)
def test_login_refuses_bad_credentials_with_a_form_error(user, data):
    client = Client()

    response = client.post("/login", data)

    assert response.status_code == 200
    assert '<div class="notice bad" role="alert">' in response.content.decode()
    assert client.get("/billing").status_code == 302


def test_login_never_redirects_off_site(user):
    response = Client().post(
        "/login?next=https://evil.example/steal", {"username": "buyer@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302 and response.url == "/billing"


def test_signed_in_users_skip_the_signup_and_login_pages(browser):
    assert browser.get("/signup").url == "/billing"
    assert browser.get("/login").url == "/billing"
    assert browser.get("/").url == "/billing"
    assert Client().get("/").url == "/login"


# --- Login required -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/billing"),
        ("get", "/billing/success?purchase=pur_x"),
        ("get", "/billing/cancel"),
        ("post", "/billing/buy"),
    ],
)
def test_billing_pages_need_a_login(db, method, path):
    response = getattr(Client(), method)(path)

    assert response.status_code == 302 and response.url.startswith("/login?next=")


def test_a_staff_login_without_a_credit_account_is_sent_to_the_admin(db):
    operator = User.objects.create_superuser(email="ops@example.com", password=PASSWORD)
    client = Client()
    client.force_login(operator)

    for path in ("/billing", "/billing/success?purchase=pur_x", "/"):
        response = client.get(path, follow=True)
        assert response.redirect_chain[-1] == ("/admin/", 302), (path, response.redirect_chain)
        assert response.status_code == 200 and "Site administration" in text(response)


def test_a_login_without_a_credit_account_gets_a_page_not_a_500(db):
    stranger = User.objects.create_user(email="stranger@example.com", password=PASSWORD)
    client = Client()
    client.force_login(stranger)

    response = client.get("/billing")

    assert response.status_code == 403 and "no credit account" in text(response)


# --- The billing page -------------------------------------------------------------------------------


def test_billing_page_shows_free_and_paid_credits_with_each_lots_expiry(browser, user, pack, business_time):
    business_time.move_to(PAID_AT, tick=False)
    paid_purchase(user, pack, paid_at=PAID_AT)
    business_time.move_to(TODAY, tick=False)

    response = browser.get("/billing")

    assert response.status_code == 200
    page = text(response)
    assert "165 credits" in page and "Free: 50" in page and "Paid: 115" in page
    # Free credits lapse at the next period start (the 10th); paid ones 12 calendar months after payment.
    assert "Free monthly credits 50 2026-04-10 00:00 UTC" in page
    assert "Purchased credits 115 2027-03-15 14:05 UTC" in page
    assert '<time datetime="2027-03-15T14:05:00+00:00">' in response.content.decode()
    assert re.search(r"2026-03-15 14:05 UTC 115 \$15 Paid Details", page), page


def test_one_credit_is_one_credit_on_the_billing_and_purchase_pages(browser, user, payments_on):
    debit_create(account=user.account, credits=49, actor=STAFF, reference="gen")
    one = CreditPack.objects.create(slug="one-credit", name="One", credits=1, price_cents=100, currency="usd")
    purchase = pending_purchase(one, account=user.account, flow="checkout")
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=100, currency="usd", now=TODAY)
    debit_create(account=user.account, credits=1, actor=STAFF, reference="gen-2")

    page = text(browser.get("/billing"))
    assert "Available credits 1 credit Free: 0 Paid: 1" in page, page
    assert "Buy 1 credit for $1" in page and "Pack 1 credit for $1" in page, page

    page = text(browser.get("/billing/success", {"purchase": purchase.public_id}))
    assert "Paid: 1 credit was added to your account." in page, page


def test_an_expired_lot_is_not_shown_or_counted(browser, user, pack, business_time):
    paid_purchase(user, pack, paid_at=PAID_AT)
    business_time.move_to(datetime(2027, 3, 16, tzinfo=UTC), tick=False)
    browser.force_login(user)  # the session from a year ago has lapsed

    response = browser.get("/billing")
    page = text(response)

    # A year on: the purchase lapsed and this period's 15 free credits were granted on the read.
    assert "15 credits" in page and "Paid: 0" in page and 'data-testid="lot-purchase"' not in response.content.decode()
    assert "Purchased credits expired -115" in page


def test_history_lists_entries_newest_first_twenty_a_page(browser, user):
    for n in range(1, 26):
        give(user.account, n, now=datetime(2026, 3, 10, 10, n, tzinfo=UTC))
    entries = list(LedgerEntry.objects.filter(account=user.account).order_by("-id"))
    assert len(entries) == 26  # the signup grant and 25 more

    first = browser.get("/billing")
    changes = re.findall(r'<td class="num" data-label="Change">\+(\d+)</td>', first.content.decode())
    assert changes == [str(n) for n in range(25, 5, -1)]
    # The link's cursor is opaque, as the API's: no row id leaves the database.
    older = re.search(r'href="(/billing\?before=cur_[0-9a-f]{16})#history-heading">Older', first.content.decode())
    assert older

    second = browser.get(older.group(1))
    changes = re.findall(r'<td class="num" data-label="Change">\+(\d+)</td>', second.content.decode())
    assert changes == ["5", "4", "3", "2", "1", "50"]
    assert "Older entries" not in text(second) and "Newest entries" in text(second)


@pytest.mark.parametrize(
    "before", ["abc", "-1", "0", "99999999999999999999999", "1.5", "", "cur_ffffffffffffffff", "12"]
)
def test_a_bad_history_link_is_a_form_error_not_a_500(browser, before):
    response = browser.get("/billing", {"before": before})

    if before == "":
        assert response.status_code == 200  # an empty field is no cursor: the newest entries
    else:
        assert response.status_code == 400 and "That history link is not valid." in text(response)
        assert "50 credits" in text(response)


def test_the_buy_button_text_comes_from_the_active_pack(browser, pack, payments_on):
    page = text(browser.get("/billing"))
    assert "Buy 115 credits for $15" in page

    CreditPack.objects.filter(pk=pack.pk).update(credits=230, price_cents=2950)
    assert "Buy 230 credits for $29.50" in text(browser.get("/billing"))

    CreditPack.objects.filter(pk=pack.pk).update(active=False)
    page = text(browser.get("/billing"))
    assert "Buy 230" not in page and "No credit packs are on sale right now." in page


def test_without_payments_the_button_is_replaced_by_a_message(browser, pack, payments_off):
    response = browser.get("/billing")

    assert "Buy 115 credits" not in text(response)
    assert "Buying credits is not available yet." in text(response)
    assert "configured" not in text(response)

    response = browser.post("/billing/buy", {"pack": pack.slug})
    assert response.status_code == 503 and "Buying credits is not available yet." in text(response)
    assert "configured" not in text(response)
    assert not Purchase.objects.exists()


# --- Buying -----------------------------------------------------------------------------------------


def test_buy_starts_a_checkout_session_and_sends_the_browser_there_with_a_303(browser, user, pack, stripe_up):
    response = browser.post("/billing/buy", {"pack": "credits-115"})

    purchase = Purchase.objects.get(account__user=user)
    assert response.status_code == 303
    assert response["Location"] == f"https://checkout.stripe.com/c/pay/cs_test_{purchase.public_id}"
    assert (purchase.status, purchase.flow, purchase.credits, purchase.amount_cents) == (
        "pending",
        "checkout",
        115,
        1500,
    )
    (sent,) = stripe_up.sent("post", CHECKOUT)
    assert sent.headers["Idempotency-Key"] == f"checkout-{purchase.public_id}"
    assert sent.params["client_reference_id"] == purchase.public_id
    assert sent.params["success_url"] == f"https://app.example/billing/success?purchase={purchase.public_id}"
    assert sent.params["cancel_url"] == f"https://app.example/billing/cancel?purchase={purchase.public_id}"


@pytest.mark.parametrize("data", [{"pack": "no-such-pack"}, {"pack": ""}, {}, {"pack": "x" * 500}, {"pack": "9" * 30}])
def test_buy_refuses_an_unknown_pack_with_a_form_error(browser, pack, stripe_up, data):
    response = browser.post("/billing/buy", data)

    assert response.status_code == 400
    assert re.search(r"This field is required|not on sale|at most 50", text(response)), text(response)
    assert stripe_up.requests == [] and not Purchase.objects.exists()


def test_buy_of_an_inactive_pack_is_refused(browser, pack, stripe_up):
    CreditPack.objects.filter(pk=pack.pk).update(active=False)

    response = browser.post("/billing/buy", {"pack": pack.slug})

    assert response.status_code == 400 and "This credit pack is not on sale." in text(response)


def test_when_stripe_refuses_the_buyer_sees_a_message_and_nothing_is_charged(browser, user, pack, stripe_up):
    stripe_up.on("post", CHECKOUT, (400, {"error": {"type": "invalid_request_error", "message": "secret detail"}}))

    response = browser.post("/billing/buy", {"pack": pack.slug})

    assert response.status_code == 502
    assert "Nothing was charged" in text(response) and "secret detail" not in text(response)
    assert Purchase.objects.get(account__user=user).status == "canceled"


def test_a_suspended_account_sees_no_button_and_cannot_buy(browser, user, pack, stripe_up):
    Account.objects.filter(user=user).update(status=Account.Status.SUSPENDED)

    assert "Buy 115 credits" not in text(browser.get("/billing"))
    response = browser.post("/billing/buy", {"pack": pack.slug})

    assert response.status_code == 403 and "suspended" in text(response)
    assert not Purchase.objects.exists() and stripe_up.requests == []


def test_buy_needs_a_post_and_a_get_is_the_sites_405_page(browser):
    response = browser.get("/billing/buy")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response["Content-Type"].startswith("text/html")
    assert "This page does not work that way" in text(response)


# --- Success and cancel pages -------------------------------------------------------------------------


def test_the_success_page_shows_a_pending_purchase_as_processing(browser, user, pack):
    purchase = pending_purchase(pack, account=user.account, flow="checkout")

    response = browser.get("/billing/success", {"purchase": purchase.public_id})

    assert response.status_code == 200
    page = text(response)
    assert "Processing your payment" in page and "Refresh this page" in page
    assert "Status Pending" in page and "Amount $15" in page


def test_the_success_page_shows_a_paid_purchase_and_its_expiry(browser, user, pack):
    purchase = paid_purchase(user, pack, paid_at=PAID_AT)

    page = text(browser.get("/billing/success", {"purchase": purchase.public_id}))

    assert "Payment received" in page and "Status Paid" in page
    assert "115 credits were added to your account. They expire on 2027-03-15 14:05 UTC" in page


def test_the_cancel_page_shows_an_unpaid_and_a_canceled_purchase(browser, user, pack):
    purchase = pending_purchase(pack, account=user.account, flow="checkout")

    page = text(browser.get("/billing/cancel", {"purchase": purchase.public_id}))
    assert "Checkout not completed" in page and "Nothing was charged" in page

    purchase_cancel(purchase=purchase, reason="checkout session expired")
    for outcome in ("cancel", "success"):
        page = text(browser.get(f"/billing/{outcome}", {"purchase": purchase.public_id}))
        assert "Purchase canceled" in page and "Status Canceled" in page


def test_nobody_sees_another_users_purchase(browser, pack):
    other = user_signup(email="other@example.com", password=PASSWORD)
    theirs = pending_purchase(pack, account=other.account, flow="checkout")

    for outcome in ("success", "cancel"):
        response = browser.get(f"/billing/{outcome}", {"purchase": theirs.public_id})
        assert response.status_code == 404
        assert "Purchase not found" in text(response) and theirs.public_id not in response.content.decode()
    response = browser.get("/billing/success", {"purchase": "pur_doesnotexist0000000"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "query",
    [{}, {"purchase": ""}, {"purchase": "acct_abc"}, {"purchase": "pur_" + "a" * 500}, {"purchase": "pur_<script>"}],
)
def test_a_malformed_purchase_link_is_a_clear_400(browser, query):
    response = browser.get("/billing/success", query)

    assert response.status_code == 400 and "This page needs a purchase id" in text(response)
    assert "<script>" not in response.content.decode()


# --- CSRF ----------------------------------------------------------------------------------------------


def test_every_form_post_needs_the_csrf_token(user, pack, stripe_up):
    client = Client(enforce_csrf_checks=True)
    signup = {"email": "csrf@example.com", "password": PASSWORD, "password_again": PASSWORD}
    assert client.post("/signup", signup).status_code == 403
    assert client.post("/login", {"username": "buyer@example.com", "password": PASSWORD}).status_code == 403
    assert not User.objects.filter(email="csrf@example.com").exists()

    client.force_login(user)
    assert client.post("/billing/buy", {"pack": pack.slug}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert not Purchase.objects.exists() and stripe_up.requests == []

    # The same posts with the token the page hands out go through.
    client.get("/billing")
    token = client.cookies["csrftoken"].value
    response = client.post("/billing/buy", {"pack": pack.slug, "csrfmiddlewaretoken": token})
    assert response.status_code == 303
    assert client.post("/logout", {"csrfmiddlewaretoken": token}).status_code == 302
    client.get("/signup")
    token = client.cookies["csrftoken"].value
    assert client.post("/signup", {**signup, "csrfmiddlewaretoken": token}).status_code == 302
    assert User.objects.filter(email="csrf@example.com").exists()


def test_the_webhook_stays_outside_csrf(db, payments_on):
    # Stripe cannot send a CSRF token: the signature is its only credential (no 403 here).
    response = Client(enforce_csrf_checks=True).post("/stripe/webhook", "{}", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("method, path", [("get", "/login"), ("get", "/no/such/page"), ("post", "/billing")])
def test_every_page_error_pages_included_carries_the_security_headers(db, settings, method, path):
    settings.SECURE_HSTS_SECONDS = 31536000
    page = getattr(Client(), method)(path, secure=True)
    assert page["Content-Type"].startswith("text/html"), page.status_code
    assert page["Content-Security-Policy"].endswith("frame-ancestors 'none'")
    assert page["X-Frame-Options"] == "DENY" and page["X-Content-Type-Options"] == "nosniff"
    assert page["Strict-Transport-Security"].startswith("max-age=31536000")
