"""Auto-recharge: a user's saved card, pack, threshold and monthly cap, and the recharges the
balance trigger queues when a movement leaves available credits below the threshold.

A recharge is charged off-session with an idempotency key from its row and granted by the
payment's webhook like any purchase (notifications.events.purchase_paid ends it). A card that is
declined or needs authentication fails it (auto_recharge.failed); AUTO_RECHARGE_MAX_FAILURES
failures in a row switch auto-recharge off. A charge whose answer was lost (Stripe unreachable or
failing) may have been made: it stays charging until the payment's webhook, reconciliation or
asking Stripe again with the same key settles it (recharges_unanswered_settle).
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import Account
from billing.errors import AccountSuspended, PaymentProviderError
from billing.models import CreditPack, Purchase, StripeCustomer
from billing.money import format_price
from billing.services import stripe_gateway
from billing.services.purchases import (
    StripeRefs,
    _id_of,
    purchase_cancel,
    purchase_record,
    purchase_refs_record,
    stripe_customer_ensure,
)
from notifications.errors import InvalidInput
from notifications.events import event_raise
from notifications.models import AutoRecharge, EventType, Recharge
from notifications.services import stripe_cards

MAX_THRESHOLD_CREDITS = 1_000_000
MAX_MONTHLY_CAP_CENTS = 99_999_999
OPEN = [Recharge.Status.QUEUED, Recharge.Status.CHARGING]
# What the cap counts: a charge that may still take the money, and any whose purchase was paid,
# whatever the recharge's own status says (a payment Stripe made after its answer was lost).
SPENT = Q(status__in=[Recharge.Status.CHARGING, Recharge.Status.SUCCEEDED]) | Q(purchase__paid_at__isnull=False)
# A charge whose answer was lost is asked again this long after it was made; Stripe keeps an
# idempotency key 24 hours, so past UNANSWERED_GIVE_UP it is not asked again but failed.
UNANSWERED_RETRY_AFTER = timedelta(minutes=10)
UNANSWERED_GIVE_UP = timedelta(hours=23)
# Why a recharge is skipped, in the user's words when they are told (auto_recharge.failed).
CAP_REACHED = "monthly cap reached"
PACK_NOT_SOLD = "the pack you chose is no longer sold: choose another on your billing page"
SKIPS_TOLD = {CAP_REACHED, PACK_NOT_SOLD}


def auto_recharge_get(*, account: Account) -> AutoRecharge:
    return AutoRecharge.objects.filter(account=account).select_related("pack").first() or AutoRecharge(account=account)


def _account_locked(account_id: int) -> None:
    """Take the account's row lock before any auto-recharge row: a movement of credits holds it
    when the balance trigger queues a recharge (the settings row) and a fulfilment holds it when
    it ends one (the recharge row), so taking those rows first and the account after (to write
    the threshold column) deadlocks with a spend crossing the threshold."""
    Account.objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True).first()


def _settings_locked(account: Account) -> AutoRecharge:
    """The account's settings row, made if missing, locked after the account (_account_locked)."""
    _account_locked(account.pk)
    settings_row, _ = AutoRecharge.objects.select_for_update().get_or_create(account=account)
    return settings_row


def _threshold_column(account_id: int, credits: int) -> None:
    # The balance trigger reads it from the account row (notifications.models); 0 is off. It is
    # not available_credits, so writing it fires nothing.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_account SET auto_recharge_threshold_credits = %s WHERE id = %s", [credits, account_id]
        )


def auto_recharge_configure(
    *, account: Account, pack: CreditPack, threshold_credits: int, monthly_cap_cents: int, enabled: bool = True
) -> AutoRecharge:
    """Save the settings; enabled needs a saved card and a cap that allows one pack."""
    if monthly_cap_cents < pack.price_cents:
        one_pack = format_price(amount_cents=pack.price_cents, currency=pack.currency)
        raise InvalidInput(f"The monthly cap must allow at least one pack ({one_pack}).", field="monthly_cap_cents")
    if enabled and account.is_suspended:
        raise AccountSuspended("A suspended account cannot buy credits.")
    with transaction.atomic():
        settings_row = _settings_locked(account)
        if enabled and not settings_row.stripe_payment_method_id:
            raise InvalidInput("Save a card first (POST /me/auto-recharge/setup-intent).", field="card")
        settings_row.pack = pack
        settings_row.threshold_credits = threshold_credits
        settings_row.monthly_cap_cents = monthly_cap_cents
        if enabled and not settings_row.enabled:
            settings_row.consecutive_failures = 0
            settings_row.disabled_reason = ""
        settings_row.enabled = enabled
        settings_row.save()
        _threshold_column(account.pk, threshold_credits if enabled else 0)
    return settings_row


def auto_recharge_disable(*, account: Account, reason: str = "") -> AutoRecharge:
    with transaction.atomic():
        settings_row = _settings_locked(account)
        settings_row.enabled = False
        settings_row.disabled_reason = reason[:200]
        settings_row.save()
        _threshold_column(account.pk, 0)
    return settings_row


# --- Saving a card --------------------------------------------------------------------------


def card_setup_start(*, account: Account) -> dict[str, Any]:
    """A SetupIntent for the account's customer; the browser confirms it with the card, then
    card_save stores the card."""
    if account.is_suspended:
        raise AccountSuspended("A suspended account cannot save a card.")
    customer_id = stripe_customer_ensure(account=account)
    return stripe_cards.setup_intent_create(account=account, customer_id=customer_id, attempt=secrets.token_hex(8))


def card_checkout_start(*, account: Account, success_url: str, cancel_url: str) -> str:
    """The URL of a setup-mode Checkout Session for the account's customer (the billing page's
    way to save a card); card_save_from_checkout stores the card when the browser returns."""
    if account.is_suspended:
        raise AccountSuspended("A suspended account cannot save a card.")
    customer_id = stripe_customer_ensure(account=account)
    session = stripe_cards.checkout_setup_session_create(
        account=account,
        customer_id=customer_id,
        success_url=success_url,
        cancel_url=cancel_url,
        attempt=secrets.token_hex(8),
    )
    url = session.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise PaymentProviderError("Stripe answered a setup Checkout Session without a url.")
    return url


def card_save_from_checkout(*, account: Account, session_id: str) -> AutoRecharge:
    session = stripe_cards.checkout_session_retrieve(session_id=session_id)
    setup_intent_id = _id_of(session.get("setup_intent"))
    if session.get("mode") != "setup" or setup_intent_id is None:
        raise InvalidInput("This Checkout Session saved no card.", field="session_id")
    return card_save(account=account, setup_intent_id=setup_intent_id)


def card_save(*, account: Account, setup_intent_id: str) -> AutoRecharge:
    """Store the card of a succeeded SetupIntent of this account's customer."""
    customer_id = StripeCustomer.objects.filter(account=account).values_list("stripe_customer_id", flat=True).first()
    intent = stripe_cards.setup_intent_retrieve(setup_intent_id=setup_intent_id)
    method_id = _id_of(intent.get("payment_method"))
    if customer_id is None or _id_of(intent.get("customer")) != customer_id:
        raise InvalidInput("This SetupIntent is not one of yours.", field="setup_intent")
    if intent.get("status") != "succeeded" or method_id is None:
        raise InvalidInput(f"The SetupIntent has not succeeded (it is {intent.get('status')}).", field="setup_intent")
    method = stripe_cards.payment_method_retrieve(payment_method_id=method_id)
    if not method.get("customer"):
        method = stripe_cards.payment_method_attach(payment_method_id=method_id, customer_id=customer_id)
    card = method.get("card") or {}
    with transaction.atomic():
        settings_row, _ = AutoRecharge.objects.select_for_update().get_or_create(account=account)
        settings_row.stripe_payment_method_id = method_id
        settings_row.card_brand = str(card.get("brand") or "")[:32]
        settings_row.card_last4 = str(card.get("last4") or "")[:4]
        settings_row.consecutive_failures = 0
        settings_row.save()
    return settings_row


# --- Charging -------------------------------------------------------------------------------


def calendar_month(now: datetime) -> tuple[datetime, datetime]:
    """The start of now's calendar month (UTC) and the start of the next."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def spent_this_month_cents(*, account_id: int, now: datetime) -> int:
    """What the recharges charged in now's calendar month (UTC) cost: a recharge counts in the
    month it was charged, not the one it was queued in (a crossing at 23:59 on the 31st is
    charged in the next month's first sweep)."""
    start, end = calendar_month(now)
    spent = Recharge.objects.filter(SPENT, account_id=account_id, charged_at__gte=start, charged_at__lt=end)
    return int(spent.aggregate(total=Sum("amount_cents"))["total"] or 0)


def packs_needed(*, available: int, threshold: int, pack_credits: int) -> int:
    """The fewest packs that bring available credits back to the threshold or above."""
    return max(math.ceil((threshold - available) / pack_credits), 0)


def recharge_charge(*, recharge_id: int, now: datetime | None = None) -> Recharge | None:
    """Charge a queued recharge once: decide how many packs, record the purchase, commit, then
    ask Stripe. None when another run has it (the queued -> charging compare-and-set)."""
    now = now or timezone.now()
    with transaction.atomic():
        if not Recharge.objects.filter(pk=recharge_id, status=Recharge.Status.QUEUED).update(
            status=Recharge.Status.CHARGING, charged_at=now
        ):
            return None
        recharge = Recharge.objects.select_related("account").get(pk=recharge_id)
        plan = _plan(recharge, now)
        if isinstance(plan, str):
            _end(recharge, Recharge.Status.SKIPPED, plan, now)
            recharge.refresh_from_db()
            return recharge
        settings_row, quantity = plan
        assert settings_row.pack is not None  # enabled implies a pack (auto_recharge_enabled_complete)
        purchase = purchase_record(
            account=recharge.account, pack=settings_row.pack, quantity=quantity, flow=Purchase.Flow.PAYMENT_INTENT
        )
        Recharge.objects.filter(pk=recharge.pk).update(
            purchase=purchase, quantity=quantity, amount_cents=purchase.amount_cents
        )
    return _charge(recharge, purchase, settings_row, now)


def _plan(recharge: Recharge, now: datetime) -> tuple[AutoRecharge, int] | str:
    """The settings and the number of packs to buy, or why nothing is bought."""
    settings_row = AutoRecharge.objects.select_related("pack").get(account_id=recharge.account_id)
    account = Account.objects.get(pk=recharge.account_id)
    if (stopped := _stopped(settings_row, account)) is not None:
        return stopped
    assert settings_row.pack is not None  # _stopped said
    needed = packs_needed(
        available=account.available_credits,
        threshold=settings_row.threshold_credits,
        pack_credits=settings_row.pack.credits,
    )
    if needed == 0:
        return "available credits are back at the threshold"
    if not settings_row.pack.active:  # an operator stopped selling it, as /me/checkout refuses it
        return PACK_NOT_SOLD
    room = settings_row.monthly_cap_cents - spent_this_month_cents(account_id=account.pk, now=now)
    quantity = min(needed, room // settings_row.pack.price_cents, settings.PURCHASE_MAX_QUANTITY)
    if quantity < 1:
        return CAP_REACHED
    return settings_row, quantity


def _stopped(settings_row: AutoRecharge, account: Account) -> str | None:
    """Why nothing may be charged now, whatever the balance: auto-recharge off, or the account
    suspended."""
    if not settings_row.enabled or settings_row.pack is None:
        return "auto-recharge is off"
    if account.is_suspended:
        return "the account is suspended"
    return None


def _charge(recharge: Recharge, purchase: Purchase, settings_row: AutoRecharge, now: datetime) -> Recharge:
    customer_id = StripeCustomer.objects.get(account_id=recharge.account_id).stripe_customer_id
    try:
        intent = stripe_cards.payment_intent_off_session(
            purchase=purchase,
            customer_id=customer_id,
            payment_method_id=settings_row.stripe_payment_method_id,
            idempotency_key=recharge.idempotency_key,
        )
    except PaymentProviderError as exc:
        if _outcome_unknown(exc):
            # Stripe may have charged the card: nothing is failed or canceled on a guess.
            Recharge.objects.filter(pk=recharge.pk).update(error=stripe_gateway.provider_detail(exc)[:2000])
            recharge.refresh_from_db()
            return recharge
        return _failed(recharge, purchase, _decline_reason(exc), now)
    purchase_refs_record(purchase=purchase, refs=StripeRefs(payment_intent_id=_id_of(intent.get("id"))))
    if intent.get("status") not in ("succeeded", "processing"):
        return _failed(recharge, purchase, f"the payment is {intent.get('status')}: the card needs the customer", now)
    recharge.refresh_from_db()
    return recharge  # charging until the payment's webhook fulfils the purchase


def _outcome_unknown(error: PaymentProviderError) -> bool:
    """Whether Stripe may have made the charge although the call failed: a network failure, an
    error of Stripe's own or a rate limit (after the library's retries), or the same key still in
    use by another request. A card error or any other refusal of the request is a definite no."""
    cause = error.__cause__
    return stripe_gateway.is_retryable(cause) or isinstance(cause, stripe.IdempotencyError)


def _decline_reason(error: PaymentProviderError) -> str:
    """What the user may read: a card's decline in Stripe's words for cardholders (its
    user_message), anything else only as a failure of the payment provider."""
    if isinstance(error.__cause__, stripe.CardError):
        return stripe_gateway.provider_detail(error)
    return error.message


def recharges_declined_later(*, now: datetime | None = None) -> int:
    """Fail the recharges whose payment Stripe declined after answering the charge (a payment
    that was `processing`): the payment_intent.payment_failed webhook records the decline on the
    purchase (billing's purchase_payment_failed), and an off-session payment is not tried again.
    Returns how many were failed."""
    now = now or timezone.now()
    declined = Recharge.objects.filter(
        status=Recharge.Status.CHARGING, purchase__status=Purchase.Status.PENDING, purchase__last_error__gt=""
    ).select_related("purchase")
    for recharge in declined:
        assert recharge.purchase is not None  # filtered on it
        _failed(recharge, recharge.purchase, recharge.purchase.last_error, now)
    return len(declined)


def recharges_unanswered_settle(*, now: datetime | None = None) -> int:
    """Settle the charges whose answer was lost: still charging, no PaymentIntent recorded and
    the purchase pending with no decline, UNANSWERED_RETRY_AFTER after the charge. Asked again
    with the same idempotency key, Stripe answers the payment it made or makes it now; so it is
    asked only while the user still wants the charge (auto-recharge on, the account active, the
    pack still sold). Past UNANSWERED_GIVE_UP the recharge fails instead: a payment Stripe did
    make has been fulfilled by then (webhook or reconciliation), so its purchase is no longer
    pending and not here. Returns how many were asked again or failed."""
    now = now or timezone.now()
    unanswered = Recharge.objects.filter(
        status=Recharge.Status.CHARGING,
        charged_at__lte=now - UNANSWERED_RETRY_AFTER,
        purchase__status=Purchase.Status.PENDING,
        purchase__stripe_payment_intent_id__isnull=True,
        purchase__last_error="",
    ).select_related("purchase")
    for recharge in unanswered:
        assert recharge.purchase is not None and recharge.charged_at is not None  # filtered on them
        if recharge.charged_at <= now - UNANSWERED_GIVE_UP:
            _failed(recharge, recharge.purchase, "the payment provider did not answer", now)
            continue
        settings_row = AutoRecharge.objects.select_related("pack").get(account_id=recharge.account_id)
        account = Account.objects.get(pk=recharge.account_id)
        if _stopped(settings_row, account) is None and settings_row.pack is not None and settings_row.pack.active:
            _charge(recharge, recharge.purchase, settings_row, now)
    return len(unanswered)


def _failed(recharge: Recharge, purchase: Purchase, message: str, now: datetime) -> Recharge:
    purchase_cancel(purchase=purchase, reason=f"auto-recharge failed: {message}")
    _end(recharge, Recharge.Status.FAILED, message, now)
    recharge.refresh_from_db()
    return recharge


def _end(recharge: Recharge, status: str, reason: str, now: datetime) -> None:
    """Close the recharge and free the account for the next crossing. A failed charge counts
    toward switching auto-recharge off; a skip tells the user only when it needs them to know
    (SKIPS_TOLD: the cap stopped it, or the pack is no longer sold)."""
    with transaction.atomic():
        _account_locked(recharge.account_id)
        if not Recharge.objects.filter(pk=recharge.pk, status=Recharge.Status.CHARGING).update(
            status=status, error=reason[:2000], completed_at=now
        ):
            return
        settings_row = AutoRecharge.objects.select_for_update().get(account_id=recharge.account_id)
        settings_row.state = AutoRecharge.State.IDLE
        if status == Recharge.Status.FAILED:
            settings_row.consecutive_failures += 1
        switched_off = settings_row.enabled and settings_row.consecutive_failures >= settings.AUTO_RECHARGE_MAX_FAILURES
        if switched_off:
            settings_row.enabled = False
            settings_row.disabled_reason = f"{settings_row.consecutive_failures} failed charges in a row"
            _threshold_column(recharge.account_id, 0)
        settings_row.save()
        if status == Recharge.Status.FAILED or reason in SKIPS_TOLD:
            data = {
                "recharge": recharge.public_id,
                "reason": reason,
                "consecutive_failures": settings_row.consecutive_failures,
                "auto_recharge_disabled": switched_off,
            }
            event_raise(type=EventType.AUTO_RECHARGE_FAILED, account_id=recharge.account_id, data=data, now=now)
