"""End to end against localstripe, a stateful Stripe API server run as its own process.

Our API creates the PaymentIntent; the test confirms it as Stripe.js would (set a test payment
method with an update, then confirm); localstripe signs and delivers payment_intent.* to our
running test server (pytest-django's live_server). Nothing of ours is replaced.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounts.models import Account, User
from billing.models import Grant, LedgerEntry, Purchase, PurchaseRefund, StripeEvent
from billing.services.ledger import debit_create
from billing.services.reconciliation import stripe_reconcile
from tests.billing.factories import STAFF
from tests.billing.stripe_support import SECRET_KEY, WEBHOOK_SECRET, post_webhook, sign
from tests.console.conftest import confirm

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# localstripe waits a second before it delivers; a loaded CI box may be slower still.
DELIVERY_DEADLINE_SECONDS = 20


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DELIVERY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)  # polling another process, not moving business time
    raise AssertionError(f"timed out waiting for {what}")


def browser(localstripe: str) -> stripe.StripeClient:
    """What Stripe.js does in the buyer's browser, through the official library."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe}, max_network_retries=0)


def register_webhook(localstripe: str, url: str) -> None:
    """localstripe's own configuration route: where to deliver its signed events."""
    data = urllib.parse.urlencode({"url": url, "secret": WEBHOOK_SECRET}).encode()
    with urllib.request.urlopen(f"{localstripe}/_config/webhooks/suite", data=data, timeout=10) as answer:
        assert answer.status == 200


@pytest.fixture
def deliver_to_us(localstripe, live_server) -> str:
    register_webhook(localstripe, f"{live_server.url}/stripe/webhook")
    return localstripe


@pytest.fixture
def deliver_nowhere(localstripe) -> str:
    register_webhook(localstripe, "http://127.0.0.1:9/stripe/webhook")  # discard port: refused
    return localstripe


def buy(user_api, pack) -> tuple[dict, Purchase]:  # type: ignore[no-untyped-def]
    api, _ = user_api
    response = api.post("/me/payment-intents", {"pack": pack.slug}, idem=None)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("pi_") and body["client_secret"].startswith(body["id"])
    return body, Purchase.objects.get(public_id=body["purchase"])


def pay(localstripe: str, intent_id: str, payment_method: str) -> None:
    client = browser(localstripe)
    client.v1.payment_intents.update(intent_id, {"payment_method": payment_method})
    client.v1.payment_intents.confirm(intent_id)


def purchase_grants(account: Account) -> list[Grant]:
    return list(Grant.objects.filter(account=account, source=Grant.Source.PURCHASE))


def test_a_visa_payment_grants_115_credits_once_through_the_delivered_webhook(
    deliver_to_us, user_api, pack, assert_ledger_clean
):
    body, purchase = buy(user_api, pack)
    pay(deliver_to_us, body["id"], "pm_card_visa")

    wait_for(lambda: Purchase.objects.filter(pk=purchase.pk, status="paid").exists(), "the purchase to be paid")
    purchase.refresh_from_db()
    event = StripeEvent.objects.get(type="payment_intent.succeeded")
    assert event.status == "processed" and event.purchase_id == purchase.pk
    assert event.api_version == "2017-08-15"  # localstripe's old version, handled all the same
    assert purchase.stripe_charge_id and purchase.stripe_charge_id.startswith("ch_")  # from the expanded charge
    (grant,) = purchase_grants(purchase.account)
    assert (grant.amount, grant.remaining, grant.expires_at) == (115, 115, purchase.expires_at)
    assert purchase.expires_at.year == purchase.paid_at.year + 1

    # Stripe delivers at least once: the same event again changes nothing.
    replay = json.dumps(event.payload)
    response = post_webhook(Client(), replay, header=sign(replay))
    assert response.status_code == 200 and response.json()["status"] == "duplicate"
    api, _ = user_api
    me = api.get("/me").json()
    assert me["balance"]["paid"] == 115 and me["balance"]["free"] == 50
    assert len(purchase_grants(purchase.account)) == 1
    assert_ledger_clean()


def test_a_card_that_fails_on_charge_grants_nothing(deliver_to_us, user_api, pack):
    body, purchase = buy(user_api, pack)
    with pytest.raises(stripe.CardError):
        pay(deliver_to_us, body["id"], "pm_card_chargeCustomerFail")

    event = wait_for(
        lambda: StripeEvent.objects.filter(type="payment_intent.payment_failed", status="processed").first(),
        "payment_intent.payment_failed",
    )
    purchase.refresh_from_db()
    assert event.purchase_id == purchase.pk
    assert purchase.status == "pending" and purchase.grant_id is None
    assert "declined" in purchase.last_error
    assert purchase_grants(purchase.account) == []


def test_an_operator_refund_in_the_admin_reaches_localstripe_and_claws_back_unspent_credits(
    deliver_to_us, user_api, pack, assert_ledger_clean
):
    body, purchase = buy(user_api, pack)
    pay(deliver_to_us, body["id"], "pm_card_visa")
    wait_for(lambda: Purchase.objects.filter(pk=purchase.pk, status="paid").exists(), "the purchase to be paid")
    # 60 spent: the 50 free credits go first, then 10 of the purchase.
    debit_create(account=purchase.account, credits=60, actor=STAFF, reference="generation")

    operator = Client()
    operator.force_login(User.objects.create_superuser(email="ops@example.com", password="x" * 12))
    # The operator console's refund: all that is left, with a reason, after the confirmation.
    refund_page = reverse("admin:billing_purchase_refund", args=[purchase.public_id])
    response = confirm(operator, refund_page, {"amount_cents": "", "reason": "customer asked"})
    assert response.status_code == 302

    refund = PurchaseRefund.objects.get(purchase=purchase)
    assert refund.status == "succeeded" and refund.amount_cents == 1500
    at_stripe = browser(deliver_to_us).v1.refunds.retrieve(refund.stripe_refund_id)
    assert at_stripe.payment_intent == body["id"] and at_stripe.amount == 1500
    assert at_stripe.metadata["refund"] == refund.public_id
    purchase.refresh_from_db()
    assert purchase.status == "refunded" and purchase.refunded_cents == 1500
    assert (purchase.clawed_back_credits, purchase.unrecoverable_credits) == (105, 10)
    assert LedgerEntry.objects.filter(grant=purchase.grant, kind="clawback").get().credits == -105
    purchase.account.refresh_from_db()
    assert purchase.account.available_credits == 0
    assert_ledger_clean()


def test_reconciliation_fulfils_a_payment_whose_webhook_never_arrived(deliver_nowhere, user_api, pack):
    body, purchase = buy(user_api, pack)
    pay(deliver_nowhere, body["id"], "pm_card_visa")

    report = stripe_reconcile()
    assert report.fulfilled == [purchase.public_id]
    # localstripe has no Checkout Sessions: that listing fails, is reported, and the rest goes on.
    assert any("checkout sessions" in error for error in report.errors), report.errors
    purchase.refresh_from_db()
    assert purchase.status == "paid" and len(purchase_grants(purchase.account)) == 1
    assert LedgerEntry.objects.get(grant=purchase.grant, kind="grant").actor_id == "stripe_reconcile"

    assert stripe_reconcile().fulfilled == []  # nothing left to fix
    with pytest.raises(SystemExit):  # the listing error makes the command fail loudly
        call_command("reconcile_stripe")
    assert len(purchase_grants(purchase.account)) == 1
