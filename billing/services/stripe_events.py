"""Stripe webhooks: verify the signature, store the raw event under its unique id, then process
it in its own transaction and record the outcome (dj-stripe's WebhookEventTrigger pattern).

Nothing is stored for a request that is not provably from Stripe. A stored event is processed
once: a duplicate delivery is acknowledged and left alone, whoever wins the insert race
processes; but an event whose storing delivery died before processing it (its worker killed,
the database gone) is processed by the delivery Stripe makes again, as that one went unanswered.
Processing is idempotent anyway (the purchase services compare-and-set), so events replayed by
an operator, arriving out of order or overlapping with reconciliation grant once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing.errors import PaymentsUnavailable, WebhookPayloadInvalid, WebhookSignatureInvalid
from billing.models import Purchase, StripeEvent
from billing.services.purchases import (
    PurchaseMismatch,
    PurchaseNotPaid,
    StripeRefs,
    _id_of,
    purchase_cancel,
    purchase_dispute_closed,
    purchase_dispute_opened,
    purchase_fulfil,
    purchase_payment_failed,
    purchase_refs_record,
    purchase_refunds_sync,
)

logger = logging.getLogger(__name__)

Json = dict[str, Any]


@dataclass(frozen=True)
class Receipt:
    event_id: str
    status: str  # the stored event's status, or "duplicate"


@dataclass(frozen=True)
class Outcome:
    status: str
    purchase: Purchase | None = None
    note: str = ""


# --- Receiving -------------------------------------------------------------------------------


def webhook_receive(*, payload: bytes, signature: str | None) -> Receipt:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise PaymentsUnavailable("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is not set).")
    _verify(payload, signature, secret)
    event = _parse(payload)
    stored = _store(event)
    if stored is None:
        return Receipt(event["id"], _delivered_again(event["id"]))
    return Receipt(event["id"], stripe_event_process(event_pk=stored.pk))


# A delivery processes the event it stored within milliseconds: one still `received` this long
# after it was stored was left by a delivery that died first. Far short of Stripe's first retry.
UNFINISHED_AFTER = timedelta(seconds=5)


def _delivered_again(event_id: str) -> str:
    """A delivery of an event stored already: a duplicate, unless the delivery that stored it
    died before processing it; then this one processes it (under the event's row lock: once)."""
    unfinished = (
        StripeEvent.objects.filter(
            stripe_event_id=event_id,
            status=StripeEvent.Status.RECEIVED,
            received_at__lt=timezone.now() - UNFINISHED_AFTER,
        )
        .values_list("pk", flat=True)
        .first()
    )
    if unfinished is None:
        return "duplicate"
    return stripe_event_process(event_pk=unfinished)


def _verify(payload: bytes, signature: str | None, secret: str) -> None:
    tolerance = settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=tolerance)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise WebhookSignatureInvalid() from exc
    # The library refuses signatures older than the tolerance only; one dated further ahead is
    # as suspect (a captured signature of a clock gone wrong would be replayable for its life).
    if _signed_at(signature or "") > time.time() + tolerance:
        raise WebhookSignatureInvalid()


def _signed_at(signature: str) -> int:
    """The `t=` of a Stripe-Signature header that verify_header accepted."""
    for item in signature.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            return int(value)
    raise WebhookSignatureInvalid()


def _parse(payload: bytes) -> Json:
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        raise WebhookPayloadInvalid("The body is not JSON.") from None
    if not isinstance(event, dict):
        raise WebhookPayloadInvalid("The body is not a JSON object.")
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not (isinstance(event_id, str) and event_id.startswith("evt_") and len(event_id) <= 255):
        raise WebhookPayloadInvalid("The event has no valid id.", field="id")
    if not (isinstance(event_type, str) and 0 < len(event_type) <= 100):
        raise WebhookPayloadInvalid("The event has no valid type.", field="type")
    if not (isinstance(data, dict) and isinstance(data.get("object"), dict)):
        raise WebhookPayloadInvalid("The event has no data.object.", field="data")
    return event


def _store(event: Json) -> StripeEvent | None:
    """Insert the raw event; None when it is already stored (a duplicate delivery)."""
    try:
        # Its own transaction, committed before processing starts: the raw event survives
        # whatever processing does.
        with transaction.atomic():
            return StripeEvent.objects.create(
                stripe_event_id=event["id"],
                type=event["type"],
                api_version=str(event.get("api_version") or "")[:64],
                livemode=event.get("livemode") is True,
                payload=event,
            )
    except IntegrityError:
        return None  # the unique event id: a concurrent or earlier delivery has it
    except DataError:
        raise WebhookPayloadInvalid("The event cannot be stored (it contains NUL characters).") from None


# --- Processing ------------------------------------------------------------------------------


def stripe_event_process(*, event_pk: int) -> str:
    """Process one stored event in its own transaction; record and return its status.

    Never raises: a failure is recorded on the event (status `failed` and the error) for
    operators, who can process it again from the admin; reconciliation covers payments.
    """
    try:
        with transaction.atomic():
            event = StripeEvent.objects.select_for_update().get(pk=event_pk)
            if event.status not in (StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED):
                return event.status  # processed already: by the first delivery or an operator
            outcome = _dispatch(event.type, event.payload["data"]["object"])
            StripeEvent.objects.filter(pk=event.pk).update(
                status=outcome.status,
                error=outcome.note[:4000],
                purchase=outcome.purchase,
                processed_at=timezone.now(),
                attempts=F("attempts") + 1,
            )
            return outcome.status
    except Exception as exc:  # recorded, not raised: Stripe gets its 200 either way
        if isinstance(exc, PurchaseMismatch | PurchaseNotPaid):
            logger.warning("Stripe event %s does not fit its purchase: %s", event_pk, exc)
        else:
            logger.exception("processing Stripe event %s failed", event_pk)
        StripeEvent.objects.filter(pk=event_pk).update(
            status=StripeEvent.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000], attempts=F("attempts") + 1
        )
        return StripeEvent.Status.FAILED


def _dispatch(event_type: str, obj: Json) -> Outcome:
    handler = HANDLERS.get(event_type)
    if handler is None:
        return Outcome(StripeEvent.Status.IGNORED, note="event type not handled")
    return handler(obj)


# --- Finding our purchase ----------------------------------------------------------------------


def _find(refs: StripeRefs, public_id: object) -> Purchase | None:
    """The purchase a Stripe object belongs to: by a Stripe id we stored, else by the purchase
    id in its metadata. A purchase that knows a different id of the same kind is not it."""
    purchases = Purchase.objects.select_related("account", "pack")
    for field, value in (
        ("stripe_checkout_session_id", refs.checkout_session_id),
        ("stripe_payment_intent_id", refs.payment_intent_id),
        ("stripe_charge_id", refs.charge_id),
    ):
        if value:
            found = purchases.filter(**{field: value}).first()
            if found is not None:
                return _checked(found, refs)
    if isinstance(public_id, str) and public_id.startswith("pur_") and len(public_id) <= 32:
        found = purchases.filter(public_id=public_id).first()
        return _checked(found, refs) if found is not None else None
    return None


def _checked(purchase: Purchase, refs: StripeRefs) -> Purchase:
    for field, value in (
        ("stripe_checkout_session_id", refs.checkout_session_id),
        ("stripe_payment_intent_id", refs.payment_intent_id),
    ):
        known = getattr(purchase, field)
        if value and known and known != value:
            raise PurchaseMismatch(f"{purchase.public_id} belongs to {known}, not {value}")
    return purchase


def _metadata_purchase(obj: Json) -> object:
    metadata = obj.get("metadata")
    return metadata.get("purchase") if isinstance(metadata, dict) else None


def session_refs(session: Json) -> StripeRefs:
    return StripeRefs(
        checkout_session_id=_id_of(session.get("id")), payment_intent_id=_id_of(session.get("payment_intent"))
    )


def purchase_for_session(session: Json) -> Purchase | None:
    return _find(session_refs(session), _metadata_purchase(session) or session.get("client_reference_id"))


def payment_intent_refs(intent: Json) -> StripeRefs:
    charge = _id_of(intent.get("latest_charge"))
    if charge is None:  # API versions before latest_charge list the charges instead
        charges = intent.get("charges")
        data = charges.get("data") if isinstance(charges, dict) else None
        if isinstance(data, list) and data:
            charge = _id_of(data[-1])
    return StripeRefs(payment_intent_id=_id_of(intent.get("id")), charge_id=charge)


def purchase_for_payment_intent(intent: Json) -> Purchase | None:
    return _find(StripeRefs(payment_intent_id=_id_of(intent.get("id"))), _metadata_purchase(intent))


def _charge_refs(charge: Json) -> StripeRefs:
    return StripeRefs(payment_intent_id=_id_of(charge.get("payment_intent")), charge_id=_id_of(charge.get("id")))


def _cents(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PurchaseMismatch(f"amount {value!r} is not an integer")
    return value


def _not_ours(obj: Json) -> Outcome:
    return Outcome(StripeEvent.Status.IGNORED, note=f"no purchase of ours for {obj.get('id')!r}")


def _fulfilled(purchase: Purchase, refs: StripeRefs, paid: object, currency: object) -> Outcome:
    granted = purchase_fulfil(purchase=purchase, refs=refs, paid_cents=_cents(paid), currency=str(currency or ""))
    note = f"granted {purchase.credits} credits" if granted else f"already {purchase.status}: nothing granted"
    return Outcome(StripeEvent.Status.PROCESSED, purchase, note)


# --- Handlers, one per event type ----------------------------------------------------------------


def _session_paid(session: Json) -> Outcome:
    purchase = purchase_for_session(session)
    if purchase is None:
        return _not_ours(session)
    refs = session_refs(session)
    if session.get("payment_status") != "paid":
        # A delayed method (bank debit): async_payment_succeeded or _failed follows.
        purchase_refs_record(purchase=purchase, refs=refs)
        return Outcome(StripeEvent.Status.PROCESSED, purchase, "completed, payment not yet received")
    return _fulfilled(purchase, refs, session.get("amount_total"), session.get("currency"))


def _session_closed(session: Json) -> Outcome:
    purchase = purchase_for_session(session)
    if purchase is None:
        return _not_ours(session)
    purchase_refs_record(purchase=purchase, refs=session_refs(session))
    canceled = purchase_cancel(purchase=purchase, reason=f"checkout session {session.get('status') or 'closed'}")
    return Outcome(StripeEvent.Status.PROCESSED, purchase, "canceled" if canceled else "not pending: unchanged")


def _intent_succeeded(intent: Json) -> Outcome:
    purchase = purchase_for_payment_intent(intent)
    if purchase is None:
        return _not_ours(intent)
    paid = intent.get("amount_received", intent.get("amount"))
    return _fulfilled(purchase, payment_intent_refs(intent), paid, intent.get("currency"))


def _intent_failed(intent: Json) -> Outcome:
    purchase = purchase_for_payment_intent(intent)
    if purchase is None:
        return _not_ours(intent)
    error = intent.get("last_payment_error")
    message = error.get("message") if isinstance(error, dict) else None
    purchase_payment_failed(purchase=purchase, reason=str(message or "payment failed"))
    return Outcome(StripeEvent.Status.PROCESSED, purchase, "payment attempt failed; purchase stays pending")


def _intent_canceled(intent: Json) -> Outcome:
    purchase = purchase_for_payment_intent(intent)
    if purchase is None:
        return _not_ours(intent)
    purchase_cancel(purchase=purchase, reason="payment intent canceled")
    return Outcome(StripeEvent.Status.PROCESSED, purchase, "canceled")


def _charge_refunded(charge: Json) -> Outcome:
    refs = _charge_refs(charge)
    purchase = _find(refs, _metadata_purchase(charge))
    if purchase is None:
        return _not_ours(charge)
    if purchase.grant_id is None and charge.get("paid") is True and charge.get("status") == "succeeded":
        # The refund overtook the payment's own event: grant first, so the clawback has a lot.
        _fulfilled(purchase, refs, charge.get("amount"), charge.get("currency"))
    refunded = _cents(charge.get("amount_refunded"))
    updated = purchase_refunds_sync(purchase=purchase, stripe_refunded_cents=refunded, refs=refs)
    return Outcome(
        StripeEvent.Status.PROCESSED,
        updated,
        f"refunded {updated.refunded_cents} cents; clawed back {updated.clawed_back_credits}, "
        f"unrecoverable {updated.unrecoverable_credits}",
    )


def _dispute_purchase(dispute: Json) -> Purchase | None:
    refs = StripeRefs(payment_intent_id=_id_of(dispute.get("payment_intent")), charge_id=_id_of(dispute.get("charge")))
    return _find(refs, _metadata_purchase(dispute))


def _dispute_created(dispute: Json) -> Outcome:
    purchase = _dispute_purchase(dispute)
    if purchase is None:
        return _not_ours(dispute)
    opened = purchase_dispute_opened(purchase=purchase, dispute_id=str(dispute.get("id") or ""))
    return Outcome(StripeEvent.Status.PROCESSED, opened, f"dispute opened; purchase {opened.status}")


def _dispute_closed(dispute: Json) -> Outcome:
    purchase = _dispute_purchase(dispute)
    if purchase is None:
        return _not_ours(dispute)
    outcome = str(dispute.get("status") or "")
    updated = purchase_dispute_closed(purchase=purchase, outcome=outcome, disputed_cents=_cents(dispute.get("amount")))
    return Outcome(StripeEvent.Status.PROCESSED, updated, f"dispute closed: {outcome}")


HANDLERS: dict[str, Callable[[Json], Outcome]] = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "checkout.session.async_payment_failed": _session_closed,
    "checkout.session.expired": _session_closed,
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "payment_intent.canceled": _intent_canceled,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
}
