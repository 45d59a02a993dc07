"""Saving a card from the billing page: a Checkout Session in setup mode (localstripe has none,
so the requests our code makes are checked at the stripe library's HTTP boundary and answered
as Stripe answers them, as tests/billing/test_stripe_checkout.py does)."""

from __future__ import annotations

import pytest
from django.test import Client

from notifications.models import AutoRecharge
from tests.billing.factories import make_account

pytestmark = pytest.mark.django_db

SESSION = {
    "id": "cs_test_setup1",
    "object": "checkout.session",
    "mode": "setup",
    "status": "complete",
    "url": "https://checkout.stripe.com/c/pay/cs_test_setup1",
    "setup_intent": "seti_1",
}


def signed_in():  # type: ignore[no-untyped-def]
    account = make_account()
    client = Client()
    client.force_login(account.user)
    return client, account


def stripe_answers(recorder, *, intent_customer: str = "cus_rec") -> None:  # type: ignore[no-untyped-def]
    recorder.on("post", "/v1/customers", (200, {"id": "cus_rec", "object": "customer"}))
    recorder.on("post", "/v1/checkout/sessions", (200, SESSION))
    recorder.on("get", "/v1/checkout/sessions/cs_test_setup1", (200, SESSION))
    recorder.on(
        "get",
        "/v1/setup_intents/seti_1",
        (
            200,
            {
                "id": "seti_1",
                "object": "setup_intent",
                "status": "succeeded",
                "customer": intent_customer,
                "payment_method": "pm_1",
            },
        ),
    )
    recorder.on(
        "get",
        "/v1/payment_methods/pm_1",
        (
            200,
            {
                "id": "pm_1",
                "object": "payment_method",
                "customer": "cus_rec",
                "card": {"brand": "mastercard", "last4": "4444"},
            },
        ),
    )


def test_the_save_a_card_button_goes_to_a_setup_checkout_and_the_return_saves_the_card(recorder):
    stripe_answers(recorder)
    client, account = signed_in()
    page = client.get("/billing")
    assert b"Save a card" in page.content

    answer = client.post("/billing/auto-recharge/card")
    assert answer.status_code == 303 and answer["Location"] == SESSION["url"]
    (sent,) = recorder.sent("post", "/v1/checkout/sessions")
    assert sent.params["mode"] == "setup" and sent.params["customer"] == "cus_rec"
    assert (
        sent.params["success_url"]
        == "http://testserver/billing/auto-recharge/card-saved?session_id={CHECKOUT_SESSION_ID}"
    )
    assert sent.params["setup_intent_data[metadata][account]"] == account.public_id
    assert sent.headers["Idempotency-Key"].startswith(f"setup-checkout-{account.public_id}-")

    back = client.get("/billing/auto-recharge/card-saved", {"session_id": "cs_test_setup1"}, follow=True)
    assert b"Card saved: Mastercard ending 4444." in back.content
    assert b"Replace the card" in back.content
    saved = AutoRecharge.objects.get(account=account)
    assert (saved.stripe_payment_method_id, saved.card_brand, saved.card_last4) == ("pm_1", "mastercard", "4444")
    assert recorder.sent("post", "/v1/payment_methods/pm_1/attach") == []  # Stripe attached it already


def test_a_session_of_another_customer_saves_nothing(recorder):
    stripe_answers(recorder, intent_customer="cus_someone_else")
    client, account = signed_in()
    client.post("/billing/auto-recharge/card")
    back = client.get("/billing/auto-recharge/card-saved", {"session_id": "cs_test_setup1"}, follow=True)
    assert b"This SetupIntent is not one of yours." in back.content
    assert not AutoRecharge.objects.filter(account=account).exclude(stripe_payment_method_id="").exists()


@pytest.mark.parametrize("query", [{}, {"session_id": "pi_123"}, {"session_id": "cs_" + "x" * 300}])
def test_a_bad_return_link_is_said_so(recorder, query):
    client, _ = signed_in()
    back = client.get("/billing/auto-recharge/card-saved", query, follow=True)
    assert back.status_code == 200 and b"not a card-saving return from Stripe" in back.content
    assert recorder.requests == []


def test_without_payments_configured_the_page_offers_no_card_button():
    client, _ = signed_in()
    assert b"Save a card" not in client.get("/billing").content
