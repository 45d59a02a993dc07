"""Reconciliation: fulfil purchases Stripe was paid for but whose webhook never arrived.

Lists recent paid Checkout Sessions and succeeded PaymentIntents at Stripe and fulfils each
purchase of ours still waiting for them, through the same idempotent service the webhook
uses, so a webhook that arrives meanwhile cannot make it grant twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.errors import PaymentProviderError
from billing.models import Purchase
from billing.services import stripe_gateway
from billing.services.ledger import Actor
from billing.services.purchases import PurchaseMismatch, StripeRefs, purchase_fulfil
from billing.services.stripe_events import (
    payment_intent_refs,
    purchase_for_payment_intent,
    purchase_for_session,
    session_refs,
)

RECONCILE_ACTOR = Actor.system("stripe_reconcile")


@dataclass
class ReconcileReport:
    checkout_sessions_seen: int = 0
    payment_intents_seen: int = 0
    fulfilled: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str = ""

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"skipped: {self.skipped}"]
        lines = [
            f"checked {self.checkout_sessions_seen} paid checkout session(s) and "
            f"{self.payment_intents_seen} succeeded payment intent(s)",
            f"fulfilled {len(self.fulfilled)} purchase(s) whose webhook never arrived"
            + (f": {', '.join(self.fulfilled)}" if self.fulfilled else ""),
        ]
        lines += [f"error: {error}" for error in self.errors]
        return lines


def stripe_reconcile(*, now: datetime | None = None, window_hours: int | None = None) -> ReconcileReport:
    report = ReconcileReport()
    if not stripe_gateway.payments_enabled():
        report.skipped = "payments are not configured (STRIPE_SECRET_KEY is not set)"
        return report
    now = now or timezone.now()
    since = now - timedelta(hours=window_hours or settings.STRIPE_RECONCILE_WINDOW_HOURS)
    for session in _listed(report, "checkout sessions", lambda: stripe_gateway.recent_checkout_sessions(since=since)):
        if session.get("payment_status") != "paid":
            continue
        report.checkout_sessions_seen += 1
        purchase = purchase_for_session(session)
        _fulfil(report, purchase, session_refs(session), session.get("amount_total"), session.get("currency"), now)
    for intent in _listed(report, "payment intents", lambda: stripe_gateway.recent_payment_intents(since=since)):
        if intent.get("status") != "succeeded":
            continue
        report.payment_intents_seen += 1
        purchase = purchase_for_payment_intent(intent)
        paid = intent.get("amount_received", intent.get("amount"))
        _fulfil(report, purchase, payment_intent_refs(intent), paid, intent.get("currency"), now)
    return report


def _listed(report: ReconcileReport, what: str, listing: Callable[[], Iterator[dict[str, Any]]]) -> Iterator[dict]:
    """The listing's items; a failure is reported and ends only this listing."""
    try:
        yield from listing()
    except PaymentProviderError as exc:
        report.errors.append(f"listing {what}: {exc.message}")


def _fulfil(
    report: ReconcileReport, purchase: Purchase | None, refs: StripeRefs, paid: object, currency: object, now: datetime
) -> None:
    if purchase is None or purchase.grant_id is not None:
        return  # not ours, or its webhook did arrive
    try:
        if isinstance(paid, bool) or not isinstance(paid, int):
            raise PurchaseMismatch(f"{purchase.public_id}: amount {paid!r} is not an integer")
        granted = purchase_fulfil(
            purchase=purchase, refs=refs, paid_cents=paid, currency=str(currency or ""), actor=RECONCILE_ACTOR, now=now
        )
    except PurchaseMismatch as exc:
        report.errors.append(str(exc))
        return
    if granted:
        report.fulfilled.append(purchase.public_id)
