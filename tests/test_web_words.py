"""What a user reads on the pages: history rows in their words, what to do about a purchase that
stays pending, and the site's own HTML pages for a 404 or a 405 (never Django's debug page, never
JSON in a browser), while API paths keep answering JSON."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from accounts.models import User
from billing.models import Grant
from billing.services.ledger import (
    Actor,
    debit_create,
    debit_refund,
    grant_clawback,
    hold_capture,
    hold_create,
    hold_release,
)
from billing.signup import user_signup
from console.services import Operator, credits_clawback, credits_grant, grant_void_audited
from tests.billing.factories import give
from tests.billing.stripe_support import pending_purchase

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
SERVICE = Actor("service", "1")


@pytest.fixture
def user() -> User:
    return user_signup(email="reader@example.com", password=PASSWORD)


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def history(response) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """The history table's rows, each a list of its cells' text."""
    table = re.search(r'<table class="stack" data-testid="history">.*?</table>', response.content.decode(), re.S)
    assert table, response.content.decode()[:2000]
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0).split("<tbody>")[1], re.S)
    return [
        [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def test_history_rows_say_what_happened_in_the_users_words(browser, user):
    account = user.account
    give(account, 20, source=Grant.Source.PURCHASE)  # a second lot: spends touch two lots
    debit_create(account=account, credits=None, operation="generation", reference="img-1", actor=SERVICE)
    hold = hold_create(account=account, credits=60, operation="edit", reference="i2", expires_in=900, actor=SERVICE)
    hold_capture(hold=hold, credits=45, actor=SERVICE)  # 45 charged, 15 go back
    other = hold_create(
        account=account, credits=2, operation="variation", reference="img-3", expires_in=900, actor=SERVICE
    )
    hold_release(hold=other, actor=SERVICE)
    refunded = debit_create(account=account, credits=3, reference="img-4", actor=SERVICE)
    debit_refund(debit=refunded, actor=SERVICE)

    rows = [row[1:4] for row in history(browser.get("/billing"))]

    assert rows == [
        ["Credits: refunded", "+3", "24"],
        ["Credits", "-3", "21"],
        ["Variation: returned", "+2", "24"],
        ["Variation: reserved", "-2", "22"],
        ["Edit: returned", "+15", "24"],
        ["Edit: 45 reserved credits used", "–", "9"],
        ["Edit: reserved", "-60", "9"],  # from both lots: one row
        ["Generation", "-1", "69"],
        ["Purchased credits", "+20", "70"],
        ["Free monthly credits", "+50", "50"],
    ]
    page = browser.get("/billing").content.decode()
    assert not re.search(r">\s*(Hold|Capture|Release|Debit|Grant)\s*<", page)


def test_history_keeps_the_operators_name_and_reasons_to_the_operators(browser, user):
    staff = User.objects.create_superuser(email="alice.ops@staff.example", password="x" * 12)
    operator = Operator.staff(staff)
    lot = credits_grant(operator=operator, account=user.account, credits=20, reason="goodwill, ticket 4411")
    credits_clawback(operator=operator, grant=lot, credits=5, reason="shared account with bob@example.com")
    grant_void_audited(operator=operator, grant=lot, reason="internal note: abuse")
    # A refund an operator started claws back under the purchase's id, which the user may read.
    bought = give(user.account, 10, source=Grant.Source.PURCHASE)
    grant_clawback(grant=bought, credits=2, actor=Actor("staff", str(staff.pk)), reference="pur_Refunded01")
    debit_create(account=user.account, credits=1, reference="img-9", actor=SERVICE)

    response = browser.get("/billing")

    assert [[row[1], row[4]] for row in history(response)] == [
        ["Credits", "img-9"],  # the generation service's reference: the user's own job
        ["Taken back: the payment was refunded", "pur_Refunded01"],
        ["Purchased credits", ""],
        ["Removed by support", ""],
        ["Taken back by support", ""],  # credits support added: no payment was refunded
        ["Credits added by support", ""],
        ["Free monthly credits", ""],
    ]
    page = response.content.decode()
    ledger = browser.get("/api/v1/me/ledger")  # the same entries through the API, the same rule
    assert ledger.status_code == 200
    assert {entry["reference"] for entry in ledger.json()["data"]} == {"img-9", "pur_Refunded01", ""}
    for internal in ("alice.ops@staff.example", "ticket 4411", "bob@example.com", "internal note"):
        assert internal not in page
        assert internal not in ledger.content.decode()


def test_a_pending_purchase_says_what_to_do_once_it_has_waited(browser, user, pack, time_machine):
    purchase = pending_purchase(pack, account=user.account, flow="checkout")
    fresh = browser.get("/billing/success", {"purchase": purchase.public_id}).content.decode()
    assert "Processing your payment" in fresh and "Waiting for Stripe" in browser.get("/billing").content.decode()

    time_machine.move_to(purchase.created_at + timedelta(hours=1), tick=False)
    browser.force_login(user)
    page = browser.get("/billing/success", {"purchase": purchase.public_id}).content.decode()
    assert "Payment not confirmed" in page
    assert "nothing was charged" in page and "buy again" in page
    assert f"contact support and give the purchase id {purchase.public_id}" in page
    billing = browser.get("/billing").content.decode()
    assert "Not completed: nothing was charged. Buy again below" in billing


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_page_is_the_sites_html_404(db, settings, debug):
    settings.DEBUG = debug
    response = Client().get("/no/such/page", headers={"Accept": "text/html"})

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "<h1>Page not found</h1>" in page and "Go to your billing page" in page
    assert "URLconf" not in page and "api/v1/" not in page  # Django's debug page lists the patterns


@pytest.mark.parametrize("debug", [False, True])
def test_a_wrong_method_on_a_page_is_the_sites_html_405(browser, settings, debug):
    settings.DEBUG = debug
    for path in ("/billing/buy", "/logout", "/verify-email/send"):
        response = browser.get(path)
        assert response.status_code == 405, path
        assert response["Content-Type"].startswith("text/html") and response.has_header("Allow")
        assert "This page does not work that way" in response.content.decode()


@pytest.mark.parametrize("debug", [False, True])
def test_api_paths_keep_answering_json(db, settings, debug):
    settings.DEBUG = debug
    missing = Client().get("/api/v1/no/such/route", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = Client().get("/stripe/webhook")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_a_view_s_own_404_page_is_kept(browser):
    response = browser.get("/billing/success", {"purchase": "pur_nosuchpurchase"})
    assert response.status_code == 404
    assert "There is no such purchase on your account." in response.content.decode()


def test_history_pages_by_opaque_cursor(browser, user):
    for n in range(25):
        give(user.account, 1, now=datetime(2026, 3, 10, 10, n, tzinfo=UTC))
    page = browser.get("/billing").content.decode()
    cursor = re.search(r"before=(cur_[0-9a-f]{16})", page)
    assert cursor
    second = browser.get("/billing", {"before": cursor.group(1)})
    assert second.status_code == 200 and len(history(second)) == 6
