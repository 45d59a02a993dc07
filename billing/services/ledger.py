"""The services that move credits: one typed wrapper per movement, each one call of its
PostgreSQL function (billing/sql/), which locks the account, settles what lapsed, moves the
credits, writes the entries and the cached balance, and records the Idempotency-Key with its
answer when given one. These wrappers only check arguments, call, and turn the outcome into a
result or a domain error; the money rules live in the functions alone.
"""

from __future__ import annotations

import functools
import json
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import UniqueConstraint
from django.utils import timezone
from psycopg.types.string import TextLoader

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
    PurchaseGrantNotVoidable,
    UnknownOperation,
)
from billing.models import ActorType, Debit, Grant, Hold, IdempotencyKey, new_debit_id, new_hold_id
from billing.quotas import QUOTA_REFUSALS, RateLimitState, quota_settings
from billing.signals import lot_granted

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


def _key_constraint() -> str:
    for constraint in IdempotencyKey._meta.constraints:
        if isinstance(constraint, UniqueConstraint) and set(constraint.fields) == {"scope", "key"}:
            return constraint.name
    raise LookupError("IdempotencyKey has no unique constraint on (scope, key)")


def call(function: str, params: list[Any]) -> tuple[Any, ...] | None:
    """One call of a movement function: its row, or None when a concurrent request recorded the
    same Idempotency-Key meanwhile (the call then rolled back whole).

    Outside a transaction (the API's case) the call is a transaction of its own; inside one it
    takes a savepoint, so that a key taken meanwhile rolls back only the call.
    """
    statement = f"SELECT * FROM {function}({', '.join(['%s'] * len(params))})"
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            # The answer's body as the function rendered it (json), as text: the API sends it on.
            cursor.cursor.adapters.register_loader("json", TextLoader)
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
class Moved:
    """What a movement function answered: its outcome, the answer's body when it was made (the
    shape the API returns, as the JSON text the function rendered), and the domain error when it
    was refused. Neither for REPLAY and KEY_TAKEN: the answer is the one recorded under the key."""

    outcome: str
    text: str | None = None
    refusal: BillingError | None = None
    rate: RateLimitState | None = None  # the account's token bucket after a spend, while it is limited

    @functools.cached_property
    def body(self) -> dict[str, Any] | None:
        """The answer's body, parsed."""
        return None if self.text is None else json.loads(self.text)

    def made(self) -> dict[str, Any]:
        """The body of a movement that must have been made; its refusal raised otherwise."""
        if self.refusal is not None:
            raise self.refusal
        assert self.outcome == MADE and self.body is not None, self.outcome
        return self.body


def spend_refusal(
    outcome: str, operation: str, credits: int | None, available: int | None, retry_after: int | None = None
) -> BillingError | None:
    if outcome == "unknown_operation":
        return UnknownOperation(f"Unknown or inactive operation {operation!r}.", field="operation")
    if outcome == "not_found":
        return AccountNotFound()
    if outcome == "suspended":
        return AccountSuspended()
    if outcome == "insufficient":
        assert available is not None and credits is not None
        return InsufficientCredits(available=available, requested=credits)
    if outcome in QUOTA_REFUSALS:
        return QUOTA_REFUSALS[outcome](retry_after=retry_after)
    return None


def _spent(row: tuple[Any, ...] | None, operation: str) -> Moved:
    """A billing_debit or billing_hold row (outcome, credits, available, held, body, retry_after,
    rate_limit, rate_remaining, rate_reset) as Moved."""
    if row is None:
        return Moved(KEY_TAKEN)
    outcome, credits, available, _held, body, retry_after, limit, remaining, reset = row
    rate = None if limit is None else RateLimitState(limit, remaining, reset)
    return Moved(outcome, body, spend_refusal(outcome, operation, credits, available, retry_after), rate)


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
) -> Moved:
    """billing_debit(): `credits`, or the active `operation`'s price, from the account with this
    public id; with `record`, the key is recorded with the answer."""
    if credits is not None:
        check_amount(credits)
    row = call(
        "billing_debit",
        [account, credits, operation, reference, json_param(metadata or {}), new_debit_id(), now, actor.type, actor.id]
        + _key_params(record)
        + quota_settings(),
    )
    return _spent(row, operation)


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
) -> Moved:
    """billing_hold(): reserve `credits`, or the active `operation`'s price, until `expires_in`
    seconds from `now`; with `record`, the key is recorded with the answer."""
    if credits is not None:
        check_amount(credits)
    expires_at = now + timedelta(seconds=expires_in)
    row = call(
        "billing_hold",
        [account, credits, operation, reference, expires_at, new_hold_id(), now, actor.type, actor.id]
        + _key_params(record)
        + quota_settings(),
    )
    return _spent(row, operation)


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
    moved = debit_spend(
        account=_account_id(account),
        credits=credits,
        operation=operation,
        reference=reference,
        metadata=metadata,
        actor=actor,
        now=now or timezone.now(),
    )
    debit = Debit.objects.select_related("account").get(public_id=moved.made()["id"])
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
    moved = hold_spend(
        account=_account_id(account),
        credits=credits,
        operation=operation,
        reference=reference,
        expires_in=expires_in,
        actor=actor,
        now=now or timezone.now(),
    )
    hold = Hold.objects.select_related("account").get(public_id=moved.made()["id"])
    _refresh_cached(account, hold.account)
    return hold


def _hold_refusal(outcome: str, hold: str, row: tuple[Any, ...]) -> BillingError | None:
    """The refusal a billing_capture or billing_release row says, if any; the body (JSON text,
    last) is read only by the refusals that quote it, and billing_release says a hold's status
    beside it."""
    if outcome == "not_found":
        return HoldNotFound()
    if outcome in ("expired", "lapsed"):
        return HoldExpired(hold=hold)
    if outcome == "not_pending":
        return HoldNotPending(status=row[1] if len(row) == 3 else _quoted(row, "status", ""))
    if outcome == "invalid_amount":
        held = _quoted(row, "held", 0)
        return InvalidAmount(f"credits must be an integer from 0 to {held}", held=held)
    return None


def _quoted(row: tuple[Any, ...], field: str, default: Any) -> Any:
    """A field of the row's body (the JSON text `call` loads, last in the row), or `default`."""
    return default if row[-1] is None else json.loads(row[-1]).get(field, default)


def _settled(row: tuple[Any, ...] | None, hold: str) -> Moved:
    """A billing_capture or billing_release row (outcome, ..., body) as Moved."""
    if row is None:
        return Moved(KEY_TAKEN)
    outcome = row[0]
    refusal = _hold_refusal(outcome, hold, row)
    return Moved(outcome, None if refusal else row[-1], refusal)


def hold_capture_recorded(
    *, hold: str, credits: int | None, actor: Actor, now: datetime, record: KeyRecord = NO_KEY
) -> Moved:
    """billing_capture(): capture `credits` (all when None) of the hold with this public id. A
    hold that lapsed is released by the call instead, kept, and refused (`lapsed`)."""
    return _settled(call("billing_capture", [hold, credits, now, actor.type, actor.id] + _key_params(record)), hold)


def hold_release_recorded(*, hold: str, actor: Actor, now: datetime, record: KeyRecord = NO_KEY) -> Moved:
    """billing_release(): give all of a pending hold's credits back (status `released`, or
    `expired` if it lapsed)."""
    return _settled(call("billing_release", [hold, now, actor.type, actor.id] + _key_params(record)), hold)


def debit_refund_recorded(*, debit: str, actor: Actor, now: datetime, record: KeyRecord = NO_KEY) -> Moved:
    """billing_refund(): give a debit's credits back to the lots it took them from, once."""
    row = call("billing_refund", [debit, now, actor.type, actor.id] + _key_params(record))
    if row is None:
        return Moved(KEY_TAKEN)
    outcome, body = row
    refusal = {"not_found": AccountNotFound(), "already_refunded": DebitAlreadyRefunded()}.get(outcome)
    return Moved(outcome, body, refusal)


def hold_capture(*, hold: Hold | str, actor: Actor, credits: int | None = None, now: datetime | None = None) -> Hold:
    """Charge all or part of a pending hold; the rest goes back to its lots.

    A hold that lapsed is released by the call instead and comes back with status `expired`:
    that release is committed, so the caller reports the refusal without undoing it.
    """
    if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int)):
        raise InvalidAmount("credits must be an integer")
    public_id = _hold_id(hold)
    moved = hold_capture_recorded(hold=public_id, credits=credits, actor=actor, now=now or timezone.now())
    if moved.outcome != "lapsed":
        moved.made()
    return Hold.objects.select_related("account").get(public_id=public_id)


def hold_release(*, hold: Hold | str, actor: Actor, now: datetime | None = None) -> Hold:
    """Give all of a pending hold's credits back (status `released`, or `expired` if it lapsed)."""
    public_id = _hold_id(hold)
    hold_release_recorded(hold=public_id, actor=actor, now=now or timezone.now()).made()
    return Hold.objects.select_related("account").get(public_id=public_id)


def _hold_id(hold: Hold | str) -> str:
    return hold if isinstance(hold, str) else hold.public_id


def debit_refund(*, debit: Debit, actor: Actor, now: datetime | None = None) -> Debit:
    """Give a debit's credits back to the lots it took them from (once)."""
    debit_refund_recorded(debit=debit.public_id, actor=actor, now=now or timezone.now()).made()
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
    with transaction.atomic():
        row = call(
            "billing_grant",
            [account.pk, source, credits, expires_at, priority, reason, reference, now, actor.type, actor.id],
        )
        if row is None or row[0] is None:
            raise Account.DoesNotExist(f"no account {account.pk}")
        grant = Grant.objects.select_related("account").get(pk=row[0])
        lot_granted.send(sender=Grant, grant=grant, now=now)
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
    """Cancel what is still unspent on one grant (held credits stay held); returns how many.
    A purchase's lot is not voided (PurchaseGrantNotVoidable): a clawback is counted on its purchase."""
    return _take_back(grant, None, "void", actor, reason, now)


def _take_back(grant: Grant, credits: int | None, kind: str, actor: Actor, reference: str, now: datetime | None) -> int:
    row = call("billing_take_back", [grant.pk, credits, kind, reference, now or timezone.now(), actor.type, actor.id])
    outcome, taken = row or ("not_found", None)  # no key is recorded, so a row always comes back
    if outcome == "not_found":
        raise Grant.DoesNotExist(f"no grant {grant.pk}")
    if outcome == "purchase":
        raise PurchaseGrantNotVoidable()
    grant.refresh_from_db(fields=["remaining"])
    return int(taken)


def account_settle(*, account: Account, actor: Actor, now: datetime | None = None) -> Account:
    """Release lapsed holds, make the free grant due and expire lapsed lots of one account."""
    with connection.cursor() as cursor:
        # billing_lock answers the account as it is after settling: read it from the same call.
        cursor.execute(
            "SELECT * FROM billing_lock(%s, %s, %s, %s)", [account.pk, now or timezone.now(), actor.type, actor.id]
        )
        row = cursor.fetchone()
        columns = [column.name for column in cursor.description]
    if row is None or row[columns.index("id")] is None:
        raise Account.DoesNotExist(f"no account {account.pk}")
    # from_db takes the values in the model's field order, which need not be the table's.
    fields = [field.attname for field in Account._meta.concrete_fields]
    values = dict(zip(columns, row, strict=True))
    return Account.from_db(connection.alias, fields, [values[name] for name in fields])


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


def json_param(value: Any) -> str:
    """A JSON parameter of a movement function (metadata, a batch's items)."""
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
