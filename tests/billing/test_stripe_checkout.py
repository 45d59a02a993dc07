"""The requests our code sends to Stripe, checked at the stripe library's HTTP-client boundary:
the library encodes them as it would for Stripe, and a recording client answers."""

from __future__ import annotations

import pytest

from accounts.models import Account
from billing.models import Purchase, StripeCustomer
from tests.billing.stripe_support import Recorded, RecordingHTTPClient

pytestmark = pytest.mark.django_db

CHECKOUT = "/v1/checkout/sessions"


def answer_customer(request: Recorded) -> tuple[int, dict]:
    return 200, {"id": "cus_test_buyer", "object": "customer", "email": request.params["email"]}


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
def stripe_up(recorder: RecordingHTTPClient) -> RecordingHTTPClient:
    recorder.on("post", "/v1/customers", answer_customer)
    recorder.on("post", CHECKOUT, answer_session)
    return recorder


def test_checkout_creates_a_session_naming_our_purchase_with_a_key_derived_from_it(stripe_up, user_api, pack, settings):
    settings.CHECKOUT_SUCCESS_URL = "https://app.example/billing/success?purchase={PURCHASE_ID}"
    settings.CHECKOUT_CANCEL_URL = "https://app.example/billing/cancel?purchase={PURCHASE_ID}"
    api, user = user_api

    response = api.post("/me/checkout", {"pack": "credits-115"}, idem=None)

    assert response.status_code == 201, response.content
    body = response.json()
    purchase = Purchase.objects.get(public_id=body["purchase"])
    assert body == {
        "id": f"cs_test_{purchase.public_id}",
        "url": f"https://checkout.stripe.com/c/pay/cs_test_{purchase.public_id}",
        "purchase": purchase.public_id,
    }
    (sent,) = stripe_up.sent("post", CHECKOUT)
    assert sent.headers["Idempotency-Key"] == f"checkout-{purchase.public_id}"
    assert sent.headers["Authorization"] == "Bearer sk_test_suite_0123456789"
    account = Account.objects.get(user=user)
    assert sent.params == {
        "mode": "payment",
        "customer": "cus_test_buyer",
        "client_reference_id": purchase.public_id,
        "metadata[purchase]": purchase.public_id,
        "metadata[account]": account.public_id,
        "payment_intent_data[metadata][purchase]": purchase.public_id,
        "payment_intent_data[metadata][account]": account.public_id,
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "1500",
        "line_items[0][price_data][product_data][name]": "115 credits",
        "line_items[0][price_data][product_data][metadata][pack]": "credits-115",
        "success_url": f"https://app.example/billing/success?purchase={purchase.public_id}",
        "cancel_url": f"https://app.example/billing/cancel?purchase={purchase.public_id}",
    }
    assert (purchase.status, purchase.flow, purchase.credits, purchase.amount_cents, purchase.currency) == (
        "pending",
        "checkout",
        115,
        1500,
        "usd",
    )
    assert purchase.stripe_checkout_session_id == body["id"]
    assert purchase.grant_id is None  # nothing is granted before Stripe reports the payment


def test_a_quantity_multiplies_credits_and_amount_and_goes_to_stripe_as_the_line_quantity(stripe_up, user_api, pack):
    api, _ = user_api
    response = api.post("/me/checkout", {"pack": "credits-115", "quantity": 3}, idem=None)
    assert response.status_code == 201, response.content
    purchase = Purchase.objects.get(public_id=response.json()["purchase"])
    assert (purchase.quantity, purchase.credits, purchase.amount_cents) == (3, 345, 4500)
    (sent,) = stripe_up.sent("post", CHECKOUT)
    assert sent.params["line_items[0][quantity]"] == "3"
    assert sent.params["line_items[0][price_data][unit_amount]"] == "1500"


def test_the_pack_may_be_named_by_its_numeric_id(stripe_up, user_api, pack):
    api, _ = user_api
    response = api.post("/me/checkout", {"pack": str(pack.pk)}, idem=None)
    assert response.status_code == 201, response.content


def test_the_stripe_customer_is_created_once_per_account_with_a_key_derived_from_the_account(stripe_up, user_api, pack):
    api, user = user_api
    for _ in range(2):
        assert api.post("/me/checkout", {"pack": "credits-115"}, idem=None).status_code == 201
    (created,) = stripe_up.sent("post", "/v1/customers")
    account = Account.objects.get(user=user)
    assert created.headers["Idempotency-Key"] == f"customer-{account.public_id}"
    assert created.params == {"email": user.email, "metadata[account]": account.public_id}
    assert StripeCustomer.objects.get(account=account).stripe_customer_id == "cus_test_buyer"
    sessions = stripe_up.sent("post", CHECKOUT)
    assert [s.params["customer"] for s in sessions] == ["cus_test_buyer", "cus_test_buyer"]
    assert len({s.headers["Idempotency-Key"] for s in sessions}) == 2  # one key per purchase


def test_payment_intents_are_created_for_the_pack_amount_with_our_purchase_in_metadata(recorder, user_api, pack):
    recorder.on("post", "/v1/customers", answer_customer)
    recorder.on(
        "post",
        "/v1/payment_intents",
        lambda r: (200, {"id": "pi_test_1", "object": "payment_intent", "client_secret": "pi_test_1_secret_x"}),
    )
    api, user = user_api
    response = api.post("/me/payment-intents", {"pack": "credits-115", "quantity": 2}, idem=None)
    assert response.status_code == 201, response.content
    body = response.json()
    purchase = Purchase.objects.get(public_id=body["purchase"])
    assert body == {"id": "pi_test_1", "client_secret": "pi_test_1_secret_x", "purchase": purchase.public_id}
    (sent,) = recorder.sent("post", "/v1/payment_intents")
    assert sent.headers["Idempotency-Key"] == f"payment-intent-{purchase.public_id}"
    assert sent.params == {
        "amount": "3000",
        "currency": "usd",
        "customer": "cus_test_buyer",
        "metadata[purchase]": purchase.public_id,
        "metadata[account]": Account.objects.get(user=user).public_id,
    }
    assert purchase.stripe_payment_intent_id == "pi_test_1" and purchase.flow == "payment_intent"


def test_a_stripe_refusal_is_a_502_and_cancels_the_purchase(stripe_up, user_api, pack):
    stripe_up.on(
        "post", CHECKOUT, (400, {"error": {"type": "invalid_request_error", "message": "Not a valid URL: success_url"}})
    )
    api, _ = user_api
    response = api.post("/me/checkout", {"pack": "credits-115"}, idem=None)
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["code"] == "payment_provider_error"
    # Stripe's own text (it quotes our parameters) is for operators, not the buyer.
    assert "Not a valid URL" not in error["message"] and "success_url" not in error["message"]
    (purchase,) = Purchase.objects.all()
    assert purchase.status == "canceled" and "Not a valid URL" in purchase.last_error


def test_stripe_is_never_called_inside_a_transaction(recorder, user_api, pack):
    from django.db import transaction

    from billing.services import stripe_gateway

    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        stripe_gateway.client()
    assert recorder.requests == []
