"""The only code that moves credits.

Every function here follows one protocol:
  transaction.atomic() -> lock the account row -> settle what lapsed -> check -> write ledger
  entries and grant remainders -> write the cached balance -> commit.
The account row lock is always the first lock taken, and the only one: all writes to an
account's grants and holds happen under it, so two spends can neither deadlock nor overdraw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account
from billing.errors import (
    AccountSuspended,
    DebitAlreadyRefunded,
    HoldExpired,
    HoldNotPending,
    InsufficientCredits,
    InvalidAmount,
)
from billing.models import ActorType, Debit, Grant, Hold, LedgerEntry
from billing.periods import Period, period_at
from billing.policy import free_credits_for, policy_get
from billing.selectors import has_lapsed_holds

# A single request never moves more than this; it keeps sums far from BIGINT overflow.
MAX_CREDITS_PER_REQUEST = 1_000_000
MAX_GRANT_CREDITS = 10**12

# Lower numbers are spent first among lots with the same expiry.
DEFAULT_PRIORITY: dict[str, int] = {
    Grant.Source.FREE_MONTHLY: 10,
    Grant.Source.PROMO: 20,
    Grant.Source.PURCHASE: 50,
    Grant.Source.ADJUSTMENT: 60,
}


@dataclass(frozen=True)
class Actor:
    type: str
    id: str = ""

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(ActorType.SYSTEM, name)


Kind = LedgerEntry.Kind


@dataclass
class _Posting:
    """Entries for one locked account, with the running cached balance they produce."""

    account: Account
    actor: Actor
    now: datetime
    reference: str = ""
    entries: list[LedgerEntry] = field(default_factory=list)
    grant_deltas: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.available = self.account.available_credits
        self.held = self.account.held_credits

    def add(
        self,
        kind: str,
        *,
        credits: int = 0,
        held: int = 0,
        grant: Grant | None = None,
        hold: Hold | None = None,
        debit: Debit | None = None,
    ) -> None:
        self.available += credits
        self.held += held
        if grant is not None and credits:
            grant.remaining += credits
            self.grant_deltas[grant.pk] = self.grant_deltas.get(grant.pk, 0) + credits
        self.entries.append(
            LedgerEntry(
                account=self.account,
                kind=kind,
                credits=credits,
                held_credits=held,
                balance_after=self.available,
                held_after=self.held,
                grant=grant,
                hold=hold,
                debit=debit,
                actor_type=self.actor.type,
                actor_id=self.actor.id,
                reference=self.reference,
                created_at=self.now,
            )
        )

    def save(self) -> None:
        for grant_id, delta in self.grant_deltas.items():
            if delta:
                # Relative update: the CHECK constraint on remaining is the last line of defence.
                Grant.objects.filter(pk=grant_id).update(remaining=F("remaining") + delta)
        LedgerEntry.objects.bulk_create(self.entries)
        if self.entries:
            Account.objects.filter(pk=self.account.pk).update(available_credits=self.available, held_credits=self.held)
            self.account.available_credits = self.available
            self.account.held_credits = self.held
        self.entries = []
        self.grant_deltas = {}


def _lock_account(account_id: int) -> Account:
    # The one lock per account, always taken first (see the module docstring).
    return Account.objects.select_for_update().get(pk=account_id)


def _is_expired(grant: Grant, now: datetime) -> bool:
    return grant.expires_at is not None and grant.expires_at <= now


def _grants_in_spend_order(account: Account) -> list[Grant]:
    # Earliest expiry first, never-expiring last, then lower priority, then oldest.
    return list(
        Grant.objects.filter(account=account, remaining__gt=0).order_by(
            F("expires_at").asc(nulls_last=True), "priority", "created_at", "id"
        )
    )


def _expire_lapsed(posting: _Posting, grants: list[Grant]) -> list[Grant]:
    """Write `expire` entries for lapsed lots; return the lots still spendable."""
    spendable = []
    for grant in grants:
        if _is_expired(grant, posting.now):
            posting.add(Kind.EXPIRE, credits=-grant.remaining, grant=grant)
        else:
            spendable.append(grant)
    return spendable


def _release_to_grants(posting: _Posting, hold: Hold, allocations: list[tuple[Grant, int]]) -> None:
    """Give held credits back to the lots they came from; lots that lapsed meanwhile expire them."""
    for grant, credits in allocations:
        if credits <= 0:
            continue
        posting.add(Kind.RELEASE, credits=credits, held=-credits, grant=grant, hold=hold)
        if _is_expired(grant, posting.now):
            posting.add(Kind.EXPIRE, credits=-credits, grant=grant)


def _hold_allocations(hold: Hold) -> list[tuple[Grant, int]]:
    entries = LedgerEntry.objects.filter(hold=hold, kind=Kind.HOLD).select_related("grant").order_by("id")
    return [(entry.grant, -entry.credits) for entry in entries if entry.grant is not None]


def _settle_expired_holds(posting: _Posting) -> None:
    if posting.account.held_credits == 0 and posting.held == 0:
        return
    lapsed = Hold.objects.filter(account=posting.account, status=Hold.Status.PENDING, expires_at__lte=posting.now)
    for hold in lapsed:
        _release_to_grants(posting, hold, _hold_allocations(hold))
        _mark_settled(hold, Hold.Status.EXPIRED, posting.now)


def _mark_settled(hold: Hold, status: str, now: datetime, captured: int = 0) -> None:
    hold.status = status
    hold.captured_credits = captured
    hold.settled_at = now
    hold.save(update_fields=["status", "captured_credits", "settled_at"])


def free_period_due(account: Account, now: datetime) -> Period | None:
    """The current free-credit period if its grant is still to be made (no query needed)."""
    if account.is_suspended:
        return None
    period = period_at(first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=now)
    if account.free_period_start is not None and account.free_period_start >= period.start:
        return None
    return period


def _grant_free_if_due(posting: _Posting) -> Grant | None:
    """The lazy refill: grant the current period's free credits if the account lacks them.

    Runs under the account lock. The refill job makes the same grant set-based; whichever
    comes first records the period on the account, and the unique constraint on
    (account, period_start) backs that up.
    """
    account = posting.account
    period = free_period_due(account, posting.now)
    if period is None:
        return None
    credits = free_credits_for(policy_get(), period.index)
    Account.objects.filter(pk=account.pk).update(free_period_start=period.start)
    account.free_period_start = period.start
    if credits <= 0:
        return None
    grant = Grant.objects.create(
        account=account,
        source=Grant.Source.FREE_MONTHLY,
        amount=credits,
        remaining=0,
        expires_at=period.end,
        priority=DEFAULT_PRIORITY[Grant.Source.FREE_MONTHLY],
        period_start=period.start,
        reason=f"free credits, period {period.index}",
        created_at=posting.now,
    )
    posting.add(Kind.GRANT, credits=credits, grant=grant)
    return grant


def _settle(posting: _Posting) -> list[Grant]:
    """Bring the locked account up to date with the clock; return its spendable lots in order.

    Releases lapsed holds, grants the current period's free credits if due, and expires lapsed
    lots. Writes what it settled before returning, so the lots it returns match the database.
    """
    _settle_expired_holds(posting)
    _grant_free_if_due(posting)
    posting.save()
    spendable = _expire_lapsed(posting, _grants_in_spend_order(posting.account))
    posting.save()
    return spendable


def _check_amount(credits: int) -> None:
    if isinstance(credits, bool) or not isinstance(credits, int) or not 1 <= credits <= MAX_CREDITS_PER_REQUEST:
        raise InvalidAmount(f"credits must be an integer from 1 to {MAX_CREDITS_PER_REQUEST}")


def _take(posting: _Posting, spendable: list[Grant], credits: int) -> list[tuple[Grant, int]]:
    available = sum(g.remaining for g in spendable)
    if available < credits:
        raise InsufficientCredits(available=available, requested=credits)
    taken = []
    left = credits
    for grant in spendable:
        if left == 0:
            break
        part = min(grant.remaining, left)
        taken.append((grant, part))
        left -= part
    return taken


def _lock_and_take(
    account: Account, credits: int, actor: Actor, reference: str, now: datetime
) -> tuple[Account, _Posting, list[tuple[Grant, int]]]:
    """The common start of a spend: lock, refuse a suspended account, settle, pick the lots."""
    locked = _lock_account(account.pk)
    if locked.is_suspended:
        raise AccountSuspended()
    posting = _Posting(locked, actor, now, reference)
    return locked, posting, _take(posting, _settle(posting), credits)


# --- Public services -----------------------------------------------------------------------


def grant_create(
    *,
    account: Account,
    source: str,
    credits: int,
    expires_at: datetime | None,
    actor: Actor,
    priority: int | None = None,
    period_start: datetime | None = None,
    reason: str = "",
    reference: str = "",
    now: datetime | None = None,
) -> Grant:
    if isinstance(credits, bool) or not isinstance(credits, int) or not 1 <= credits <= MAX_GRANT_CREDITS:
        raise InvalidAmount(f"credits must be an integer from 1 to {MAX_GRANT_CREDITS}")
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_account(account.pk)
        grant = Grant.objects.create(
            account=locked,
            source=source,
            amount=credits,
            remaining=0,
            expires_at=expires_at,
            priority=DEFAULT_PRIORITY.get(source, 100) if priority is None else priority,
            period_start=period_start,
            reason=reason,
            created_at=now,
        )
        posting = _Posting(locked, actor, now, reference)
        posting.add(Kind.GRANT, credits=credits, grant=grant)
        if _is_expired(grant, now):
            posting.add(Kind.EXPIRE, credits=-credits, grant=grant)
        posting.save()
    _refresh_cached(account, locked)
    return grant


def debit_create(
    *,
    account: Account,
    credits: int,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Debit:
    _check_amount(credits)
    now = now or timezone.now()
    with transaction.atomic():
        locked, posting, taken = _lock_and_take(account, credits, actor, reference, now)
        debit = Debit.objects.create(
            account=locked,
            credits=credits,
            operation=operation,
            reference=reference,
            metadata=metadata or {},
            actor_type=actor.type,
            actor_id=actor.id,
            created_at=now,
        )
        for grant, part in taken:
            posting.add(Kind.DEBIT, credits=-part, grant=grant, debit=debit)
        posting.save()
    _refresh_cached(account, locked)
    return debit


def debit_refund(*, debit: Debit, actor: Actor, now: datetime | None = None) -> Debit:
    """Give a debit's credits back to the lots it took them from (once)."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_account(debit.account_id)
        # Compare-and-set under the lock: only one refund can ever flip refunded_at.
        if not Debit.objects.filter(pk=debit.pk, refunded_at__isnull=True).update(refunded_at=now):
            raise DebitAlreadyRefunded()
        posting = _Posting(locked, actor, now, debit.reference)
        _settle(posting)
        # Read after settling (which has saved), so each lot's remaining is current; a debit has
        # one entry per lot, so no lot is met twice here.
        entries = LedgerEntry.objects.filter(debit=debit, kind=Kind.DEBIT).select_related("grant").order_by("id")
        for entry in entries:
            grant = entry.grant
            assert grant is not None
            posting.add(Kind.REFUND, credits=-entry.credits, grant=grant, debit=debit)
            if _is_expired(grant, now):
                posting.add(Kind.EXPIRE, credits=entry.credits, grant=grant)
        posting.save()
    debit.refunded_at = now
    return debit


def hold_create(
    *,
    account: Account,
    credits: int,
    expires_in: int,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    now: datetime | None = None,
) -> Hold:
    _check_amount(credits)
    now = now or timezone.now()
    with transaction.atomic():
        locked, posting, taken = _lock_and_take(account, credits, actor, reference, now)
        hold = Hold.objects.create(
            account=locked,
            credits=credits,
            operation=operation,
            reference=reference,
            actor_type=actor.type,
            actor_id=actor.id,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in),
        )
        for grant, part in taken:
            posting.add(Kind.HOLD, credits=-part, held=part, grant=grant, hold=hold)
        posting.save()
    _refresh_cached(account, locked)
    return hold


def _lock_pending_hold(hold: Hold, now: datetime, actor: Actor) -> tuple[Account, Hold, _Posting]:
    locked = _lock_account(hold.account_id)
    current = Hold.objects.get(pk=hold.pk)
    posting = _Posting(locked, actor, now, current.reference)
    if current.status == Hold.Status.EXPIRED:
        raise HoldExpired(hold=current.public_id)
    if current.status != Hold.Status.PENDING:
        raise HoldNotPending(status=current.status)
    return locked, current, posting


def hold_capture(*, hold: Hold, actor: Actor, credits: int | None = None, now: datetime | None = None) -> Hold:
    """Charge all or part of a pending hold; the rest goes back to its lots.

    A hold past its expiry is released instead and comes back with status `expired`: that
    release is committed, so the caller reports the refusal without undoing it.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked, current, posting = _lock_pending_hold(hold, now, actor)
        amount = current.credits if credits is None else credits
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= current.credits:
            raise InvalidAmount(f"credits must be an integer from 0 to {current.credits}", held=current.credits)
        allocations = _hold_allocations(current)
        if current.expires_at <= now:
            _release_to_grants(posting, current, allocations)
            _mark_settled(current, Hold.Status.EXPIRED, now)
        else:
            posting.add(Kind.CAPTURE, held=-amount, hold=current)
            _release_to_grants(posting, current, _split_after(allocations, amount))
            _mark_settled(current, Hold.Status.CAPTURED, now, captured=amount)
        posting.save()
    return current


def _split_after(allocations: list[tuple[Grant, int]], captured: int) -> list[tuple[Grant, int]]:
    """The uncaptured rest of each lot, charging the lots in the order they were held."""
    rest = []
    for grant, credits in allocations:
        charged = min(credits, captured)
        captured -= charged
        rest.append((grant, credits - charged))
    return rest


def hold_release(*, hold: Hold, actor: Actor, now: datetime | None = None) -> Hold:
    now = now or timezone.now()
    with transaction.atomic():
        locked, current, posting = _lock_pending_hold(hold, now, actor)
        _release_to_grants(posting, current, _hold_allocations(current))
        status = Hold.Status.EXPIRED if current.expires_at <= now else Hold.Status.RELEASED
        _mark_settled(current, status, now)
        posting.save()
    return current


def account_settle(*, account: Account, actor: Actor, now: datetime | None = None) -> Account:
    """Release lapsed holds, grant due free credits and expire lapsed lots of one account."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_account(account.pk)
        _settle(_Posting(locked, actor, now))
    return locked


def needs_settle(account: Account, now: datetime) -> bool:
    """Whether a read should settle the account first (cheap: at most one indexed query)."""
    return free_period_due(account, now) is not None or has_lapsed_holds(account, now)


def free_grant_ensure(*, account: Account, actor: Actor, now: datetime | None = None) -> Grant | None:
    """Grant the current period's free credits unless the account has them; the new grant or None."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_account(account.pk)
        posting = _Posting(locked, actor, now)
        grant = _grant_free_if_due(posting)
        posting.save()
    _refresh_cached(account, locked)
    return grant


def _refresh_cached(target: Account, locked: Account) -> None:
    target.available_credits = locked.available_credits
    target.held_credits = locked.held_credits


# --- Purchases (issue 4): credits that move together with a purchase row ----------------------


def account_lock(*, account_id: int) -> Account:
    """Take the account's row lock inside the caller's transaction: the protocol's first step.

    For services that change their own rows together with credits (a purchase and its grant),
    so that they, too, take the account lock before anything else.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("account_lock needs a transaction: the lock lasts until it ends")
    return _lock_account(account_id)


def grant_clawback(
    *, grant: Grant, credits: int, actor: Actor, reference: str = "", now: datetime | None = None
) -> int:
    """Take back up to `credits` of what is still unspent on one grant; returns how many.

    Credits already spent, held, or expired are not there to take: the caller records the
    shortfall (for a purchase, as unrecoverable credits).
    """
    if isinstance(credits, bool) or not isinstance(credits, int) or credits < 0:
        raise InvalidAmount("credits must be a non-negative integer")
    now = now or timezone.now()
    with transaction.atomic():
        locked = _lock_account(grant.account_id)
        posting = _Posting(locked, actor, now, reference)
        # Settle first: a lot that lapsed is expired, not clawed back.
        _settle(posting)
        grant.refresh_from_db(fields=["remaining"])
        taken = min(credits, grant.remaining)
        if taken:
            posting.add(Kind.CLAWBACK, credits=-taken, grant=grant)
        posting.save()
    return taken
