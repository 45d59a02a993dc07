"""The only code that talks to Stripe. Plain dicts out, idempotency keys derived from our rows.

Nothing here may run inside a database transaction: callers record their intent, commit, call
Stripe, and record the result (zulip's `invoice_plan` pattern). `assert_no_transaction` is the
guard. Written against the `StripeClient` of the official library, pointed at STRIPE_API_BASE
when set (localstripe in development and tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

import stripe
from django.conf import settings
from django.db import connection

from accounts.models import Account
from billing.errors import PaymentProviderError, PaymentsUnavailable
from billing.models import Purchase, PurchaseRefund

# Tests put a recording client here (the library's own HTTP-client boundary); None is the default.
HTTP_CLIENT: stripe.HTTPClient | None = None
_default_http_client: stripe.HTTPClient | None = None

# Our request path waits on Stripe, so fail fast rather than hold a worker for 80 s.
TIMEOUT_SECONDS = 20
# The library retries connection errors and 409/5xx answers; the idempotency keys make that safe.
MAX_NETWORK_RETRIES = 2
LIST_PAGE_SIZE = 100


def payments_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def assert_no_transaction() -> None:
    """Refuse to call Stripe while a transaction (and perhaps a row lock) is open."""
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise RuntimeError("Stripe must not be called inside a database transaction")


def _http_client() -> stripe.HTTPClient:
    global _default_http_client
    if HTTP_CLIENT is not None:
        return HTTP_CLIENT
    if _default_http_client is None:
        # One client for the process: it keeps a requests session per thread.
        _default_http_client = stripe.RequestsClient(timeout=TIMEOUT_SECONDS)
    return _default_http_client


def client() -> stripe.StripeClient:
    if not payments_enabled():
        raise PaymentsUnavailable()
    assert_no_transaction()
    base = settings.STRIPE_API_BASE
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base} if base else None,
        http_client=_http_client(),
        max_network_retries=MAX_NETWORK_RETRIES,
    )


def _plain(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict())


def call(description: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One Stripe call, as every caller of Stripe makes it: the answer as plain data, or a
    PaymentProviderError that says what failed (`description`) in our words."""
    try:
        return _plain(fn(*args, **kwargs))
    except stripe.StripeError as exc:
        # Stripe's own words can quote our request's parameters: they are for operators
        # (provider_detail), and the buyer is told only what failed.
        raise PaymentProviderError(f"The payment provider refused or did not answer ({description}).") from exc


def provider_detail(error: PaymentProviderError) -> str:
    """What Stripe said about a failed call, for operators: a purchase's last_error, a refund's
    error. Never part of an API answer."""
    cause = error.__cause__
    if isinstance(cause, stripe.StripeError):
        return getattr(cause, "user_message", None) or str(cause) or type(cause).__name__
    return error.message


def purchase_metadata(purchase: Purchase) -> dict[str, str]:
    """Names our purchase on every Stripe object made for it, so events find their way back."""
    return {"purchase": purchase.public_id, "account": purchase.account.public_id}


def customer_create(*, account: Account) -> str:
    params: dict[str, Any] = {"email": account.user.email, "metadata": {"account": account.public_id}}
    # Derived from the account row: concurrent first purchases get one customer, not two.
    options: dict[str, Any] = {"idempotency_key": f"customer-{account.public_id}"}
    return call("create customer", client().v1.customers.create, params, options)["id"]


def _redirect_url(template: str, purchase: Purchase) -> str:
    return template.replace("{PURCHASE_ID}", purchase.public_id)


def checkout_session_create(*, purchase: Purchase, customer_id: str) -> dict[str, Any]:
    pack = purchase.pack
    metadata = purchase_metadata(purchase)
    params: dict[str, Any] = {
        "mode": "payment",
        "customer": customer_id,
        "client_reference_id": purchase.public_id,
        "metadata": metadata,
        # The PaymentIntent Checkout makes carries our purchase too (its events, refunds).
        "payment_intent_data": {"metadata": metadata},
        "line_items": [
            {
                "quantity": purchase.quantity,
                "price_data": {
                    "currency": purchase.currency,
                    "unit_amount": purchase.amount_cents // purchase.quantity,
                    "product_data": {"name": pack.name, "metadata": {"pack": pack.slug}},
                },
            }
        ],
        "success_url": _redirect_url(settings.CHECKOUT_SUCCESS_URL, purchase),
        "cancel_url": _redirect_url(settings.CHECKOUT_CANCEL_URL, purchase),
    }
    options: dict[str, Any] = {"idempotency_key": f"checkout-{purchase.public_id}"}
    return call("create Checkout Session", client().v1.checkout.sessions.create, params, options)


def payment_intent_create(*, purchase: Purchase, customer_id: str) -> dict[str, Any]:
    # Only parameters both Stripe and localstripe know: Stripe picks the payment methods.
    params: dict[str, Any] = {
        "amount": purchase.amount_cents,
        "currency": purchase.currency,
        "customer": customer_id,
        "metadata": purchase_metadata(purchase),
    }
    options: dict[str, Any] = {"idempotency_key": f"payment-intent-{purchase.public_id}"}
    return call("create PaymentIntent", client().v1.payment_intents.create, params, options)


def refund_create(*, refund: PurchaseRefund) -> dict[str, Any]:
    purchase = refund.purchase
    params: dict[str, Any] = {
        "amount": refund.amount_cents,
        "metadata": {"purchase": purchase.public_id, "refund": refund.public_id},
    }
    if purchase.stripe_payment_intent_id:
        params["payment_intent"] = purchase.stripe_payment_intent_id
    else:
        params["charge"] = purchase.stripe_charge_id
    options: dict[str, Any] = {"idempotency_key": refund.idempotency_key}
    return call("create Refund", client().v1.refunds.create, params, options)


def _recent(list_call: Any, params: dict[str, Any], since: datetime) -> Iterator[dict[str, Any]]:
    """Objects created at or after `since`, newest first (Stripe's list order).

    No `created` filter is sent: localstripe refuses it. Stripe lists newest first, so the walk
    stops at the first older object.
    """
    cutoff = int(since.timestamp())
    try:
        page = list_call({**params, "limit": LIST_PAGE_SIZE})
        for item in page.auto_paging_iter():
            data = _plain(item)
            if int(data.get("created") or 0) < cutoff:
                return
            yield data
    except stripe.StripeError as exc:
        raise PaymentProviderError(f"Stripe list failed: {exc}") from exc


def recent_checkout_sessions(*, since: datetime) -> Iterator[dict[str, Any]]:
    return _recent(client().v1.checkout.sessions.list, {"status": "complete"}, since)


def recent_payment_intents(*, since: datetime) -> Iterator[dict[str, Any]]:
    return _recent(client().v1.payment_intents.list, {}, since)


def is_retryable(exc: BaseException | None) -> bool:
    """Whether Stripe may have acted on a failed call (or may yet): retry with the same key."""
    return isinstance(exc, stripe.APIConnectionError | stripe.APIError | stripe.RateLimitError)
