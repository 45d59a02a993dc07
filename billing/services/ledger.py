"""The services that move credits: one typed wrapper per movement, each one call of its
PostgreSQL function (billing/sql/), which locks the account, settles what lapsed, moves the
credits, writes the entries and the cached balance, and records the Idempotency-Key with its
answer when given one. These wrappers only check arguments, call, and turn the outcome into a
result or a domain error; the money rules live in the functions alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import UniqueConstraint
from django.utils import timezone

from accounts.models import Account
from billing.errors import (
    AccountNotFound,
    AccountSuspended,
    BillingError,
    DebitAlreadyRefunded,
    HoldExpired,
    HoldNotFound,
    HoldNotPending,
    InsufficientCredits,
    InvalidAmount,
    UnknownOperation,
)
from billing.models import ActorType, Debit, Grant, Hold, IdempotencyKey, new_debit_id, new_hold_id

# A single request never moves more than this; it keeps sums far from BIGINT overflow.
MAX_CREDITS_PER_REQUEST = 1_000_000
MAX_GRANT_CREDITS = 10**12

# The outcomes the functions answer.
MADE = "made"
REPLAY = "replay"  # the key was recorded before the call
KEY_TAKEN = "key_taken"  # the key was recorded by a concurrent request during the call (rolled back)


@dataclass(frozen=True)
class Actor:
    type: str
    id: str = ""

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(ActorType.SYSTEM, name)


@dataclass(frozen=True)
class KeyRecord:
    """The Idempotency-Key a movement is recorded under, with its answer."""

    scope: str
    key: str
    request_hash: str


NO_KEY = KeyRecord("", "", "")  # a movement made by our own code: nothing to record


def _key_params(record: KeyRecord) -> list[str | None]:
    return [record.scope or None, record.key or None, record.request_hash or None]


# Set by request_transaction(): a service call is then inside a transaction that any error rolls
# back whole, so the call needs no savepoint of its own.
_whole_request = ContextVar("billing_whole_request_transaction", default=False)


@contextmanager
def request_transaction() -> Iterator[None]:
    """A transaction for one API request: an error anywhere inside rolls all of it back."""
    token = _whole_request.set(True)
    try:
        with transaction.atomic():
            yield
    finally:
        _whole_request.reset(token)


def _key_constraint() -> str:
    for constraint in IdempotencyKey._meta.constraints:
        if isinstance(constraint, UniqueConstraint) and set(constraint.fields) == {"scope", "key"}:
            return constraint.name
    raise LookupError("IdempotencyKey has no unique constraint on (scope, key)")


def call(function: str, params: list[Any]) -> tuple[Any, ...] | None:
    """One call of a movement function: its row, or None when a concurrent request recorded the
    same Idempotency-Key meanwhile (the call then rolled back whole).

    Outside a transaction (the API's case) the call is a transaction of its own; inside one it
    takes a savepoint unless the whole request is one transaction, so that a key taken meanwhile
    rolls back only the call.
    """
    statement = f"SELECT * FROM {function}({', '.join(['%s'] * len(params))})"
    savepoint = connection.in_atomic_block and not _whole_request.get()
    try:
        with transaction.atomic() if savepoint else nullcontext(), connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchone()
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != _key_constraint():
            raise
        return None


def check_amount(credits: int, most: int = MAX_CREDITS_PER_REQUEST) -> None:
    if isinstance(credits, bool) or not isinstance(credits, int) or not 1 <= credits <= most:
        raise InvalidAmount(f"credits must be an integer from 1 to {most}")


def _account_id(account: Account | str | int) -> str:
    return account if isinstance(account, str) else str(getattr(account, "public_id", account))


@dataclass(frozen=True)
class Spent:
    """What billing_debit or billing_hold answered."""

    outcome: str
    public_id: str
    credits: int | None = None
    available: int | None = None
    held: int | None = None

    def refusal(self, operation: str) -> BillingError | None:
        """The domain error of a spend that was not made (None for made, replay and key taken)."""
        if self.outcome == "unknown_operation":
            return UnknownOperation(f"Unknown or inactive operation {operation!r}.", field="operation")
        if self.outcome == "not_found":
            return AccountNotFound()
        if self.outcome == "suspended":
            return AccountSuspended()
        if self.outcome == "insufficient":
            assert self.available is not None and self.credits is not None
            return InsufficientCredits(available=self.available, requested=self.credits)
        return None


def debit_spend(
    *,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    actor: Actor,
    now: datetime,
    metadata: dict[str, Any] | None = None,
    record: KeyRecord = NO_KEY,
    body: Callable[[str], dict[str, Any]] | None = None,
) -> Spent:
    """billing_debit(): `credits`, or the active `operation`'s price, from the account with this
    public id; with `record`, the key is recorded with `body(the debit's public id)` plus the
    debit's credits and the balance after it."""
    if credits is not None:
        check_amount(credits)
    public_id = new_debit_id()
    row = call(
        "billing_debit",
        [account, credits, operation, reference, _json(metadata or {}), public_id, now, actor.type, actor.id]
        + _key_params(record)
        + [_json(body(public_id) if body is not None else {})],
    )
    return Spent(KEY_TAKEN, public_id) if row is None else Spent(row[0], public_id, *row[1:])


def hold_spend(
    *,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    expires_in: int,
    actor: Actor,
    now: datetime,
    record: KeyRecord = NO_KEY,
    body: Callable[[str], dict[str, Any]] | None = None,
) -> Spent:
    """billing_hold(): reserve `credits`, or the active `operation`'s price, until `expires_in`
    seconds from `now`; with `record`, the key is recorded with `body(the hold's public id)` plus
    the hold's credits."""
    if credits is not None:
        check_amount(credits)
    public_id = new_hold_id()
    row = call(
        "billing_hold",
        [account, credits, operation, reference, now + timedelta(seconds=expires_in), public_id, now]
        + [actor.type, actor.id]
        + _key_params(record)
        + [_json(body(public_id) if body is not None else {})],
    )
    return Spent(KEY_TAKEN, public_id) if row is None else Spent(row[0], public_id, *row[1:])


def _made(spent: Spent, operation: str) -> str:
    error = spent.refusal(operation)
    if error is not None:
        raise error
    return spent.public_id


def debit_create(
    *,
    account: Account | str,
    credits: int | None,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Debit:
    spent = debit_spend(
        account=_account_id(account),
        credits=credits,
        operation=operation,
        reference=reference,
        metadata=metadata,
        actor=actor,
        now=now or timezone.now(),
    )
    debit = Debit.objects.select_related("account").get(public_id=_made(spent, operation))
    _refresh_cached(account, debit.account)
    return debit


def hold_create(
    *,
    account: Account | str,
    credits: int | None,
    expires_in: int,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    now: datetime | None = None,
) -> Hold:
    spent = hold_spend(
        account=_account_id(account),
        credits=credits,
        operation=operation,
        reference=reference,
        expires_in=expires_in,
        actor=actor,
        now=now or timezone.now(),
    )
    hold = Hold.objects.select_related("account").get(public_id=_made(spent, operation))
    _refresh_cached(account, hold.account)
    return hold


@dataclass(frozen=True)
class Captured:
    """What billing_capture answered: the outcome, and the hold as the API shows it when made."""

    outcome: str
    body: dict[str, Any] | None = None

    def refusal(self, hold: str) -> BillingError:
        """The domain error of a capture that was not made, replayed or taken meanwhile."""
        if self.outcome == "invalid_amount":
            held = (self.body or {}).get("held", 0)
            return InvalidAmount(f"credits must be an integer from 0 to {held}", held=held)
        if self.outcome in ("expired", "lapsed"):
            return HoldExpired(hold=hold)
        return _hold_refusal(self.outcome, self.body)


def hold_capture_recorded(
    *, hold: str, credits: int | None, actor: Actor, now: datetime, record: KeyRecord = NO_KEY
) -> Captured:
    """billing_capture(): capture `credits` (all when None) of the hold with this public id."""
    row = call("billing_capture", [hold, credits, now, actor.type, actor.id] + _key_params(record))
    if row is None:
        return Captured(KEY_TAKEN)
    outcome, body = row
    # Django has psycopg hand jsonb over as text (its JSONField decodes it itself).
    return Captured(outcome, _loads(body))


def hold_capture(*, hold: Hold | str, actor: Actor, credits: int | None = None, now: datetime | None = None) -> Hold:
    """Charge all or part of a pending hold; the rest goes back to its lots.

    A hold that lapsed is released by the call instead and comes back with status `expired`:
    that release is committed, so the caller reports the refusal without undoing it.
    """
    if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int)):
        raise InvalidAmount("credits must be an integer")
    public_id = _hold_id(hold)
    captured = hold_capture_recorded(hold=public_id, credits=credits, actor=actor, now=now or timezone.now())
    if captured.outcome not in (MADE, "lapsed"):
        raise captured.refusal(public_id)
    return Hold.objects.select_related("account").get(public_id=public_id)


def hold_release(*, hold: Hold | str, actor: Actor, now: datetime | None = None) -> Hold:
    """Give all of a pending hold's credits back (status `released`, or `expired` if it lapsed)."""
    public_id = _hold_id(hold)
    row = call("billing_release", [public_id, now or timezone.now(), actor.type, actor.id])
    assert row is not None
    if row[0] != MADE:
        raise _hold_refusal(row[0], {"status": row[1]})
    return Hold.objects.select_related("account").get(public_id=public_id)


def _hold_id(hold: Hold | str) -> str:
    return hold if isinstance(hold, str) else hold.public_id


def _hold_refusal(outcome: str, body: dict[str, Any] | None) -> BillingError:
    if outcome == "not_found":
        return HoldNotFound()
    if outcome == "expired":
        return HoldExpired()
    if outcome == "not_pending":
        return HoldNotPending(status=(body or {}).get("status", ""))
    raise AssertionError(f"a hold's unknown outcome {outcome!r}")


def debit_refund(*, debit: Debit, actor: Actor, now: datetime | None = None) -> Debit:
    """Give a debit's credits back to the lots it took them from (once)."""
    row = call("billing_refund", [debit.pk, now or timezone.now(), actor.type, actor.id])
    assert row is not None
    if row[0] == "not_found":
        raise AccountNotFound()
    if row[0] == "already_refunded":
        raise DebitAlreadyRefunded()
    debit.refresh_from_db(fields=["refunded_at"])
    return debit


def grant_create(
    *,
    account: Account,
    source: str,
    credits: int,
    expires_at: datetime | None,
    actor: Actor,
    priority: int | None = None,
    reason: str = "",
    reference: str = "",
    now: datetime | None = None,
) -> Grant:
    """A lot of `credits` for the account (a purchase, an adjustment or a promotion)."""
    check_amount(credits, MAX_GRANT_CREDITS)
    if source == Grant.Source.FREE_MONTHLY:
        raise ValueError("free grants are made by settling the account (account_settle)")
    now = now or timezone.now()
    row = call(
        "billing_grant",
        [account.pk, source, credits, expires_at, priority, reason, reference, now, actor.type, actor.id],
    )
    if row is None or row[0] is None:
        raise Account.DoesNotExist(f"no account {account.pk}")
    grant = Grant.objects.select_related("account").get(pk=row[0])
    _refresh_cached(account, grant.account)
    return grant


def grant_clawback(
    *, grant: Grant, credits: int, actor: Actor, reference: str = "", now: datetime | None = None
) -> int:
    """Take back up to `credits` of what is still unspent on one grant; returns how many.

    Credits already spent, held, or expired are not there to take: the caller records the
    shortfall (for a purchase, as unrecoverable credits).
    """
    if isinstance(credits, bool) or not isinstance(credits, int) or credits < 0:
        raise InvalidAmount("credits must be a non-negative integer")
    return _take_back(grant, credits, "clawback", actor, reference, now)


def grant_void(*, grant: Grant, actor: Actor, reason: str = "", now: datetime | None = None) -> int:
    """Cancel what is still unspent on one grant (held credits stay held); returns how many."""
    return _take_back(grant, None, "void", actor, reason, now)


def _take_back(grant: Grant, credits: int | None, kind: str, actor: Actor, reference: str, now: datetime | None) -> int:
    row = call("billing_take_back", [grant.pk, credits, kind, reference, now or timezone.now(), actor.type, actor.id])
    if row is None or row[0] is None:
        raise Grant.DoesNotExist(f"no grant {grant.pk}")
    grant.refresh_from_db(fields=["remaining"])
    return int(row[0])


@dataclass(frozen=True)
class BatchDebit:
    """One debit of a batch: the account by public id, and what debit_create takes."""

    account: str
    credits: int
    reference: str = ""
    operation: str = ""
    metadata: dict[str, Any] | None = None


@dataclass
class BatchOutcome:
    """A batch item's debit (its public id), or the refusal that stopped it; the balance right after it."""

    debit: str | None = None
    error: BillingError | None = None
    available: int = 0
    held: int = 0


def debits_create_batch(*, items: list[BatchDebit], actor: Actor, now: datetime | None = None) -> list[BatchOutcome]:
    """Many debits in one transaction (billing_debit_batch); each is made or refused on its own,
    in the given order."""
    outcomes = [BatchOutcome() for _ in items]
    sent: list[BatchOutcome] = []
    rows: list[dict[str, Any]] = []
    for item, result in zip(items, outcomes, strict=True):
        try:
            check_amount(item.credits)
        except InvalidAmount as exc:
            result.error = exc
            continue
        sent.append(result)
        rows.append(
            {
                "account": item.account,
                "credits": item.credits,
                "operation": item.operation,
                "reference": item.reference,
                "metadata": item.metadata or {},
                "public_id": new_debit_id(),
            }
        )
    if not rows:
        return outcomes
    statement = "SELECT n, outcome, public_id, credits, available, held FROM billing_debit_batch(%s, %s, %s, %s)"
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(statement, [_json(rows), now or timezone.now(), actor.type, actor.id])
        answered = cursor.fetchall()
    for place, (result, row, (n, *answer)) in enumerate(zip(sent, rows, answered, strict=True)):
        assert n == place + 1, "billing_debit_batch answers its items in order"
        spent = Spent(*answer)
        result.error = spent.refusal(row["operation"])
        if result.error is None:
            result.debit, result.available, result.held = spent.public_id, spent.available or 0, spent.held or 0
    return outcomes


def account_settle(*, account: Account, actor: Actor, now: datetime | None = None) -> Account:
    """Release lapsed holds, make the free grant due and expire lapsed lots of one account."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (billing_lock(%s, %s, %s, %s)).id", [account.pk, now or timezone.now(), actor.type, actor.id]
        )
    return Account.objects.get(pk=account.pk)


def free_grant_ensure(*, account: Account, actor: Actor, now: datetime | None = None) -> Grant | None:
    """Settle the account; the free grant that made, if any."""
    before = Account.objects.values_list("free_period_start", flat=True).get(pk=account.pk)
    settled = account_settle(account=account, actor=actor, now=now)
    _refresh_cached(account, settled)
    if settled.free_period_start == before:
        return None
    return Grant.objects.filter(account=settled, period_start=settled.free_period_start).first()


LOCK_ACTOR = Actor(ActorType.SYSTEM, "account_lock")


def account_lock(*, account_id: int, actor: Actor = LOCK_ACTOR, now: datetime | None = None) -> Account:
    """Take the account's row lock, settled, inside the caller's transaction: the protocol's first
    step, for services that change their own rows together with credits (a purchase and its
    grant), so that they, too, take the account lock before anything else."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("account_lock needs a transaction: the lock lasts until it ends")
    return account_settle(account=Account(pk=account_id), actor=actor, now=now)


def _refresh_cached(target: Account | str, current: Account) -> None:
    if isinstance(target, Account):
        target.available_credits = current.available_credits
        target.held_credits = current.held_credits


def _json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
