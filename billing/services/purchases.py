"""Buying credit packs: a purchase's life from the buy button to refunds and disputes.

Two rules shape every function here:
- Credits move only through the ledger services, and every change of a paid purchase happens
  under its account's row lock, taken first (`account_lock`), then the purchase row. So a
  fulfilment, a refund and a dispute of one purchase queue up instead of racing.
- Stripe is never called inside a transaction: the purchase or refund row is committed first
  (the intent), then Stripe is called, then its answer is recorded.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Account
from billing.errors import AccountSuspended, PaymentProviderError, PaymentsUnavailable, RefundRefused, UnknownPack
from billing.models import CreditPack, Grant, Purchase, PurchaseRefund, StripeCustomer, StripeEvent
from billing.money import credits_to_claw_back
from billing.services import stripe_gateway
from billing.services.ledger import Actor, account_lock, grant_clawback, grant_create
from notifications import events

STRIPE_ACTOR = Actor.system("stripe")
CLAIMABLE = [Purchase.Status.PENDING, Purchase.Status.CANCELED]
# Refunds that count against what is left to refund (a requested one may have reached Stripe).
OPEN_REFUNDS = [PurchaseRefund.Status.REQUESTED, PurchaseRefund.Status.PENDING, PurchaseRefund.Status.SUCCEEDED]
# Refunds whose money is on its way back to the customer: their credits go.
MONEY_BACK_REFUNDS = [PurchaseRefund.Status.PENDING, PurchaseRefund.Status.SUCCEEDED]


class PurchaseMismatch(Exception):
    """Stripe reports a payment that does not match the purchase (amount or currency)."""


class PurchaseNotPaid(Exception):
    """A refund or dispute arrived for a purchase that has granted nothing."""


@dataclass(frozen=True)
class StripeRefs:
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None


def credits_expiry(paid_at: datetime) -> datetime:
    """Twelve calendar months after payment, same time of day (29 February -> 28 February)."""
    moment = paid_at.astimezone(UTC)
    year = moment.year + 1
    return moment.replace(year=year, day=min(moment.day, calendar.monthrange(year, moment.month)[1]))


def pack_get(*, pack: str) -> CreditPack:
    """An active pack by its slug (or its numeric id: ASCII digits only, as str.isdigit also
    takes digits int() refuses, such as a superscript two)."""
    packs = CreditPack.objects.filter(active=True)
    numeric = pack.isascii() and pack.isdigit() and len(pack) < 18
    found = packs.filter(pk=int(pack)).first() if numeric else packs.filter(slug=pack).first()
    if found is None:
        raise UnknownPack(f"Unknown or inactive pack {pack!r}.", field="pack")
    return found


# --- Starting a purchase ---------------------------------------------------------------------


def stripe_customer_ensure(*, account: Account) -> str:
    """The account's Stripe Customer id, creating the customer on first use."""
    existing = StripeCustomer.objects.filter(account=account).values_list("stripe_customer_id", flat=True).first()
    if existing:
        return existing
    customer_id = stripe_gateway.customer_create(account=account)
    try:
        with transaction.atomic():
            StripeCustomer.objects.create(account=account, stripe_customer_id=customer_id)
    except IntegrityError:
        pass  # a concurrent first purchase stored it (the same customer: same idempotency key)
    return StripeCustomer.objects.get(account=account).stripe_customer_id


def purchase_start(*, account: Account, pack: CreditPack, quantity: int, flow: str) -> tuple[Purchase, dict]:
    """Record a pending purchase, then open its Checkout Session or PaymentIntent at Stripe.

    Returns the purchase and Stripe's object (a session with `url`, or an intent with
    `client_secret`). A Stripe failure cancels the purchase and raises PaymentProviderError.
    """
    if not stripe_gateway.payments_enabled():
        raise PaymentsUnavailable()
    if account.is_suspended:
        raise AccountSuspended("A suspended account cannot buy credits.")
    customer_id = stripe_customer_ensure(account=account)
    purchase = purchase_record(account=account, pack=pack, quantity=quantity, flow=flow)
    try:
        if flow == Purchase.Flow.CHECKOUT:
            made = stripe_gateway.checkout_session_create(purchase=purchase, customer_id=customer_id)
            refs = StripeRefs(checkout_session_id=made["id"], payment_intent_id=_id_of(made.get("payment_intent")))
        else:
            made = stripe_gateway.payment_intent_create(purchase=purchase, customer_id=customer_id)
            refs = StripeRefs(payment_intent_id=made["id"])
    except PaymentProviderError as exc:
        Purchase.objects.filter(pk=purchase.pk, status=Purchase.Status.PENDING).update(
            status=Purchase.Status.CANCELED, last_error=stripe_gateway.provider_detail(exc)[:2000]
        )
        raise
    purchase_refs_record(purchase=purchase, refs=refs)
    return purchase, made


def purchase_record(*, account: Account, pack: CreditPack, quantity: int, flow: str) -> Purchase:
    """A pending purchase of `quantity` packs, its price and credits copied from the pack."""
    return Purchase.objects.create(
        account=account,
        pack=pack,
        flow=flow,
        quantity=quantity,
        credits=pack.credits * quantity,
        amount_cents=pack.price_cents * quantity,
        currency=pack.currency,
    )


def _id_of(value: object) -> str | None:
    """A Stripe reference that may come as an id or as the expanded object (localstripe)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def purchase_refs_record(*, purchase: Purchase, refs: StripeRefs) -> None:
    """Store Stripe ids the purchase does not know yet; never overwrite one it knows."""
    for field, value in (
        ("stripe_checkout_session_id", refs.checkout_session_id),
        ("stripe_payment_intent_id", refs.payment_intent_id),
        ("stripe_charge_id", refs.charge_id),
    ):
        if value and getattr(purchase, field) is None:
            Purchase.objects.filter(pk=purchase.pk, **{f"{field}__isnull": True}).update(**{field: value})
            setattr(purchase, field, value)


# --- Payment outcomes --------------------------------------------------------------------------


def purchase_fulfil(
    *,
    purchase: Purchase,
    refs: StripeRefs,
    paid_cents: int,
    currency: str,
    actor: Actor = STRIPE_ACTOR,
    now: datetime | None = None,
) -> bool:
    """Grant the purchase's credits if it is not paid yet. True when this call granted them.

    Safe to call for every duplicate, retried or late event: the grant and the compare-and-set
    of the status commit together, so exactly one call ever grants.
    """
    now = now or timezone.now()
    if paid_cents != purchase.amount_cents or (currency or "").lower() != purchase.currency:
        raise PurchaseMismatch(
            f"{purchase.public_id}: Stripe reports {paid_cents} {currency}, expected {purchase.amount_cents} "
            f"{purchase.currency}"
        )
    with transaction.atomic():
        account_lock(account_id=purchase.account_id)  # the protocol's first lock
        purchase_refs_record(purchase=purchase, refs=refs)
        try:
            with transaction.atomic():
                expires_at = credits_expiry(now)
                grant = grant_create(
                    account=purchase.account,
                    source=Grant.Source.PURCHASE,
                    credits=purchase.credits,
                    expires_at=expires_at,
                    actor=actor,
                    reason=f"purchase {purchase.public_id}",
                    reference=purchase.public_id,
                    now=now,
                )
                # Compare-and-set: only the call that moves the purchase out of pending keeps
                # its grant; any other rolls its grant back here.
                claimed = Purchase.objects.filter(pk=purchase.pk, status__in=CLAIMABLE, grant__isnull=True).update(
                    status=Purchase.Status.PAID, grant=grant, paid_at=now, expires_at=expires_at, last_error=""
                )
                if claimed != 1:
                    raise _AlreadyPaid()
                purchase.refresh_from_db()
                events.purchase_paid(purchase=purchase, now=now)
        except _AlreadyPaid:
            return False
    return True


class _AlreadyPaid(Exception):
    pass


def purchase_cancel(*, purchase: Purchase, reason: str) -> bool:
    """A purchase that will never be paid (session expired, async payment failed)."""
    return bool(
        Purchase.objects.filter(pk=purchase.pk, status=Purchase.Status.PENDING).update(
            status=Purchase.Status.CANCELED, last_error=reason[:2000]
        )
    )


def purchase_payment_failed(*, purchase: Purchase, reason: str) -> None:
    """A declined attempt: the purchase stays pending, as the buyer may try another card."""
    Purchase.objects.filter(pk=purchase.pk, status=Purchase.Status.PENDING).update(last_error=reason[:2000])


# --- Refunds and disputes ----------------------------------------------------------------------


def _locked(purchase: Purchase) -> Purchase:
    """Lock the account, then the purchase; the purchase must have granted its credits."""
    account_lock(account_id=purchase.account_id)
    current = Purchase.objects.select_for_update().select_related("account").get(pk=purchase.pk)
    if current.grant_id is None:
        raise PurchaseNotPaid(f"{current.public_id} has not been paid")
    return current


def _status_after_refunds(purchase: Purchase) -> str:
    if purchase.refunded_cents >= purchase.amount_cents:
        return Purchase.Status.REFUNDED
    if purchase.refunded_cents > 0:
        return Purchase.Status.PARTIALLY_REFUNDED
    return Purchase.Status.PAID


def _claw_back_due(purchase: Purchase, actor: Actor, now: datetime) -> None:
    """Take back the credits that the money gone back to the customer paid for.

    What was already spent, held or expired cannot be taken now: it is recorded as unrecoverable,
    and credits that come back to the lot later (a hold released, a debit refunded) pay it
    first (billing_give_back). Every clawback of the lot, an operator's too, is counted on the
    purchase by the engine (billing_take_back).
    """
    target = credits_to_claw_back(
        credits=purchase.credits,
        amount_cents=purchase.amount_cents,
        reversed_cents=purchase.refunded_cents + purchase.disputed_cents,
    )
    due = target - purchase.clawed_back_credits - purchase.unrecoverable_credits
    if due <= 0:
        return
    assert purchase.grant_id is not None  # _locked checked it
    grant = Grant.objects.get(pk=purchase.grant_id)
    taken = grant_clawback(grant=grant, credits=due, actor=actor, reference=purchase.public_id, now=now)
    purchase.refresh_from_db(fields=["clawed_back_credits", "unrecoverable_credits"])  # as the engine counted
    purchase.unrecoverable_credits += due - taken


_REVERSAL_FIELDS = [
    "status",
    "refunded_cents",
    "disputed_cents",
    "clawed_back_credits",
    "unrecoverable_credits",
    "flagged_for_review",
    "updated_at",
]


def purchase_refunds_sync(
    *,
    purchase: Purchase,
    stripe_refunded_cents: int | None = None,
    refs: StripeRefs | None = None,
    actor: Actor = STRIPE_ACTOR,
    now=None,
) -> Purchase:
    """Bring the purchase up to the money refunded so far and claw back the credits it paid for.

    `stripe_refunded_cents` is Stripe's running total (a charge's `amount_refunded`); refunds
    operators made here count too. Both can only grow, so the larger wins and a late or
    repeated event changes nothing. `refs`: Stripe ids the refund's event names, recorded under
    the same locks (the account's first, as every movement takes them).
    """
    now = now or timezone.now()
    with transaction.atomic():
        current = _locked(purchase)
        if refs is not None:
            purchase_refs_record(purchase=current, refs=refs)
        refunded_before = current.refunded_cents
        ours = current.refunds.filter(status__in=MONEY_BACK_REFUNDS).aggregate(t=Sum("amount_cents"))["t"] or 0
        current.refunded_cents = min(
            current.amount_cents, max(current.refunded_cents, stripe_refunded_cents or 0, ours)
        )
        _claw_back_due(current, actor, now)
        if current.status != Purchase.Status.DISPUTED:
            current.status = _status_after_refunds(current)
        current.save(update_fields=_REVERSAL_FIELDS)
        events.purchase_refunded(purchase=current, refunded_cents_before=refunded_before, now=now)
    return current


def purchase_dispute_opened(*, purchase: Purchase, dispute_id: str = "") -> Purchase:
    """The purchase's payment is disputed: it stays `disputed` until the dispute closes. Stripe
    does not promise the order of its events: the opening of a dispute (`dispute_id`) whose
    closing was processed already changes nothing."""
    with transaction.atomic():
        current = _locked(purchase)
        if not _dispute_closing_processed(current, dispute_id):
            current.status = Purchase.Status.DISPUTED
            current.save(update_fields=_REVERSAL_FIELDS)
    return current


def _dispute_closing_processed(purchase: Purchase, dispute_id: str) -> bool:
    """Whether the closing of the dispute was processed. A purchase's events are processed under
    its lock, each in the transaction that marks it processed, so this is read under the lock."""
    closings = purchase.events.filter(type="charge.dispute.closed", status=StripeEvent.Status.PROCESSED)
    return bool(dispute_id) and closings.filter(payload__data__object__id=dispute_id).exists()


def purchase_dispute_closed(
    *, purchase: Purchase, outcome: str, disputed_cents: int, actor: Actor = STRIPE_ACTOR, now=None
) -> Purchase:
    """A lost dispute takes the disputed money's credits back and flags the purchase for
    operators; any other outcome (won, inquiry closed) returns it to its refund status."""
    now = now or timezone.now()
    with transaction.atomic():
        current = _locked(purchase)
        if outcome == "lost":
            current.disputed_cents = min(current.amount_cents, max(current.disputed_cents, disputed_cents))
            _claw_back_due(current, actor, now)
            current.flagged_for_review = True
            current.status = Purchase.Status.DISPUTED
        elif current.status == Purchase.Status.DISPUTED and current.disputed_cents == 0:
            current.status = _status_after_refunds(current)
        current.save(update_fields=_REVERSAL_FIELDS)
    return current


# --- Operator refunds ------------------------------------------------------------------------


def purchase_refund_request(
    *, purchase: Purchase, amount_cents: int | None = None, requested_by: str = "", reason: str = ""
) -> PurchaseRefund:
    """Record an operator's refund (the intent) and commit it; `amount_cents` None is all that is left."""
    with transaction.atomic():
        try:
            current = _locked(purchase)
        except PurchaseNotPaid:
            raise RefundRefused(f"{purchase.public_id} is {purchase.status}: only paid purchases refund.") from None
        if not (current.stripe_payment_intent_id or current.stripe_charge_id):
            raise RefundRefused(f"{current.public_id} has no Stripe payment to refund.")
        open_cents = current.refunds.filter(status__in=OPEN_REFUNDS).aggregate(t=Sum("amount_cents"))["t"] or 0
        refundable = current.amount_cents - max(current.refunded_cents, open_cents)
        amount = refundable if amount_cents is None else amount_cents
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= refundable:
            raise RefundRefused(f"{current.public_id}: {refundable} cents are left to refund, asked for {amount}.")
        return PurchaseRefund.objects.create(
            purchase=current, amount_cents=amount, requested_by=requested_by[:255], reason=reason
        )


def purchase_refund_execute(*, refund: PurchaseRefund, actor: Actor, now=None) -> PurchaseRefund:
    """Send a recorded refund to Stripe (outside any transaction) and record the answer.

    The idempotency key comes from the refund row, so running this again for a refund whose
    answer was lost cannot refund twice. A connection failure leaves it `requested` to retry.
    """
    if refund.status != PurchaseRefund.Status.REQUESTED:
        return refund
    try:
        answer = stripe_gateway.refund_create(refund=refund)
    except PaymentProviderError as exc:
        retryable = stripe_gateway.is_retryable(exc.__cause__)
        failed = PurchaseRefund.Status.REQUESTED if retryable else PurchaseRefund.Status.FAILED
        detail = stripe_gateway.provider_detail(exc)
        PurchaseRefund.objects.filter(pk=refund.pk).update(status=failed, error=detail[:2000])
        refund.status, refund.error = failed, detail
        raise
    status = str(answer.get("status"))
    if status not in PurchaseRefund.Status.values or status == PurchaseRefund.Status.REQUESTED:
        status = PurchaseRefund.Status.PENDING  # requires_action and the like: money not back yet
    PurchaseRefund.objects.filter(pk=refund.pk).update(
        status=status, stripe_refund_id=answer["id"], completed_at=now or timezone.now(), error=""
    )
    refund.refresh_from_db()
    if status in MONEY_BACK_REFUNDS:
        purchase_refunds_sync(purchase=refund.purchase, actor=actor, now=now)
    return refund
