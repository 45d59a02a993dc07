"""The Stripe calls of auto-recharge: saving a card with a SetupIntent and charging it off-session.

Through billing's gateway (its client, its error translation, its no-transaction guard), with
idempotency keys derived from our rows as everywhere. Written for both Stripe and localstripe:
localstripe does not attach a SetupIntent's card to the customer, so card_save attaches it when
the card has no customer yet (Stripe has attached it already).
"""

from __future__ import annotations

from typing import Any

from accounts.models import Account
from billing.models import Purchase
from billing.services import stripe_gateway
from billing.services.stripe_gateway import call, purchase_metadata


def setup_intent_create(*, account: Account, customer_id: str, attempt: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "customer": customer_id,
        "usage": "off_session",
        "payment_method_types": ["card"],
        "metadata": {"account": account.public_id, "auto_recharge": "true"},
    }
    options: dict[str, Any] = {"idempotency_key": f"setup-intent-{account.public_id}-{attempt}"}
    return call("create SetupIntent", stripe_gateway.client().v1.setup_intents.create, params, options)


def setup_intent_retrieve(*, setup_intent_id: str) -> dict[str, Any]:
    return call("retrieve SetupIntent", stripe_gateway.client().v1.setup_intents.retrieve, setup_intent_id)


def payment_method_retrieve(*, payment_method_id: str) -> dict[str, Any]:
    return call("retrieve PaymentMethod", stripe_gateway.client().v1.payment_methods.retrieve, payment_method_id)


def payment_method_attach(*, payment_method_id: str, customer_id: str) -> dict[str, Any]:
    return call(
        "attach PaymentMethod",
        stripe_gateway.client().v1.payment_methods.attach,
        payment_method_id,
        {"customer": customer_id},
    )


def payment_intent_off_session(
    *, purchase: Purchase, customer_id: str, payment_method_id: str, idempotency_key: str
) -> dict[str, Any]:
    """Charge the saved card now, without the customer: Stripe answers a card that needs
    authentication or is declined with a card error (PaymentProviderError, its cause a
    stripe.CardError)."""
    params: dict[str, Any] = {
        "amount": purchase.amount_cents,
        "currency": purchase.currency,
        "customer": customer_id,
        "payment_method": payment_method_id,
        "off_session": True,
        "confirm": True,
        "metadata": {**purchase_metadata(purchase), "auto_recharge": "true"},
    }
    options: dict[str, Any] = {"idempotency_key": idempotency_key}
    return call("create off-session PaymentIntent", stripe_gateway.client().v1.payment_intents.create, params, options)


def checkout_setup_session_create(
    *, account: Account, customer_id: str, success_url: str, cancel_url: str, attempt: str
) -> dict[str, Any]:
    """A Checkout Session in setup mode: Stripe's page collects the card and makes the
    SetupIntent; it returns the browser to `success_url` with {CHECKOUT_SESSION_ID} filled in."""
    params: dict[str, Any] = {
        "mode": "setup",
        "customer": customer_id,
        "currency": "usd",
        "payment_method_types": ["card"],
        "metadata": {"account": account.public_id, "auto_recharge": "true"},
        "setup_intent_data": {"metadata": {"account": account.public_id, "auto_recharge": "true"}},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    options: dict[str, Any] = {"idempotency_key": f"setup-checkout-{account.public_id}-{attempt}"}
    return call("create setup Checkout Session", stripe_gateway.client().v1.checkout.sessions.create, params, options)


def checkout_session_retrieve(*, session_id: str) -> dict[str, Any]:
    return call("retrieve Checkout Session", stripe_gateway.client().v1.checkout.sessions.retrieve, session_id)
