"""Test support for Stripe: signed events shaped as in Stripe's API reference, and a recording
HTTP client that sits at the stripe library's own HTTP boundary (its `HTTPClient` interface).

Nothing of ours is mocked: our code builds its requests through the real library, which
encodes them and hands them to this client; the client records them and answers as Stripe
would.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe
from django.test import Client

from billing.models import Purchase

WEBHOOK_SECRET = "whsec_test_secret_for_the_suite"
SECRET_KEY = "sk_test_suite_0123456789"
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}test{next(_ids):08d}{int(time.time() * 1000) % 10**8}"


# --- Events --------------------------------------------------------------------------------------


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt_"),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def session_object(purchase: Purchase, **overrides: Any) -> dict[str, Any]:
    """A Checkout Session as Stripe sends it in checkout.session.* events."""
    session = {
        "id": purchase.stripe_checkout_session_id or new_id("cs_test_"),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_subtotal": purchase.amount_cents,
        "amount_total": purchase.amount_cents,
        "currency": purchase.currency,
        "client_reference_id": purchase.public_id,
        "customer": "cus_test",
        "metadata": {"purchase": purchase.public_id, "account": purchase.account.public_id},
        "payment_intent": new_id("pi_"),
        "created": int(time.time()),
        "livemode": False,
        "url": None,
    }
    session.update(overrides)
    return session


def intent_object(purchase: Purchase, **overrides: Any) -> dict[str, Any]:
    intent = {
        "id": purchase.stripe_payment_intent_id or new_id("pi_"),
        "object": "payment_intent",
        "amount": purchase.amount_cents,
        "amount_received": purchase.amount_cents,
        "currency": purchase.currency,
        "status": "succeeded",
        "customer": "cus_test",
        "latest_charge": new_id("ch_"),
        "metadata": {"purchase": purchase.public_id, "account": purchase.account.public_id},
        "created": int(time.time()),
        "livemode": False,
    }
    intent.update(overrides)
    return intent


def charge_object(purchase: Purchase, *, amount_refunded: int, **overrides: Any) -> dict[str, Any]:
    charge = {
        "id": purchase.stripe_charge_id or new_id("ch_"),
        "object": "charge",
        "amount": purchase.amount_cents,
        "amount_captured": purchase.amount_cents,
        "amount_refunded": amount_refunded,
        "currency": purchase.currency,
        "paid": True,
        "status": "succeeded",
        "refunded": amount_refunded >= purchase.amount_cents,
        "payment_intent": purchase.stripe_payment_intent_id,
        "metadata": {},
        "created": int(time.time()),
        "livemode": False,
    }
    charge.update(overrides)
    return charge


def dispute_object(purchase: Purchase, *, status: str, amount: int | None = None) -> dict[str, Any]:
    return {
        "id": new_id("du_"),
        "object": "dispute",
        "amount": purchase.amount_cents if amount is None else amount,
        "charge": purchase.stripe_charge_id,
        "payment_intent": purchase.stripe_payment_intent_id,
        "currency": purchase.currency,
        "reason": "fraudulent",
        "status": status,
        "is_charge_refundable": False,
        "metadata": {},
        "created": int(time.time()),
        "livemode": False,
    }


def sign(body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def post_webhook(client: Client, payload: dict[str, Any] | str, *, header: str | None = "sign", **kwargs: Any):  # type: ignore[no-untyped-def]
    """POST a body to /stripe/webhook, signed with the real scheme unless told otherwise."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    headers = {}
    if header == "sign":
        header = sign(body, **kwargs)
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/stripe/webhook", body, content_type="application/json", headers=headers)


# --- The library's HTTP boundary ------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def params(self) -> dict[str, str]:
        """The form-encoded body (POST) or query string (GET), flattened as Stripe encodes it."""
        raw = self.body if self.method == "post" else urlsplit(self.url).query
        return dict(parse_qsl(raw or "", keep_blank_values=True))


Answer = tuple[int, dict[str, Any]]


class RecordingHTTPClient(stripe.HTTPClient):
    """Records every request the stripe library sends and answers from `routes`."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.routes: dict[tuple[str, str], Callable[[Recorded], Answer] | Answer] = {}

    def on(self, method: str, path: str, answer: Callable[[Recorded], Answer] | Answer) -> None:
        self.routes[(method.lower(), path)] = answer

    def request(self, method, url, headers, post_data=None, *, _usage=None):  # type: ignore[no-untyped-def,override]
        recorded = Recorded(method.lower(), url, dict(headers or {}), post_data)
        self.requests.append(recorded)
        route = self.routes.get((recorded.method, recorded.path))
        if route is None:
            status, body = 404, {"error": {"type": "invalid_request_error", "message": f"no route {recorded.path}"}}
        else:
            status, body = route(recorded) if callable(route) else route
        return json.dumps(body), status, {"request-id": new_id("req_")}

    def request_stream(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def close(self) -> None:
        pass

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def stripe_list(url: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": False, "data": items}


def pending_purchase(pack, *, account=None, flow: str = "payment_intent", quantity: int = 1, **fields: Any) -> Purchase:  # type: ignore[no-untyped-def]
    """A purchase as purchase_start leaves it once Stripe answered: pending, with its Stripe id."""
    from tests.billing.factories import make_account

    if flow == "payment_intent":
        fields.setdefault("stripe_payment_intent_id", new_id("pi_"))
    else:
        fields.setdefault("stripe_checkout_session_id", new_id("cs_test_"))
    return Purchase.objects.create(
        account=account or make_account(),
        pack=pack,
        flow=flow,
        quantity=quantity,
        credits=pack.credits * quantity,
        amount_cents=pack.price_cents * quantity,
        currency=pack.currency,
        **fields,
    )
