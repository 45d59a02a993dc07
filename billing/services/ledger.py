"""The only code that moves credits.

Every function here follows one protocol:
  transaction.atomic() -> lock the account row -> settle what lapsed -> check -> write ledger
  entries and grant remainders -> write the cached balance -> commit.
The account row lock is always the first lock taken, and the only one: all writes to an
account's grants and holds happen under it, so two spends can neither deadlock nor overdraw.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import F
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
)
from billing.models import ActorType, Debit, Grant, Hold, LedgerEntry
from billing.periods import Period, period_at
from billing.policy import free_credits_for, policy_get
from billing.selectors import SPEND_ORDER_SQL, has_lapsed_holds

M = TypeVar("M", Account, Grant)

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


@dataclass(slots=True)
class _Entry:
    """A ledger entry to write (a LedgerEntry row); `debit` is set when the debit is new."""

    account_id: int
    kind: str
    credits: int
    held_credits: int
    balance_after: int
    held_after: int
    grant_id: int | None
    hold_id: int | None
    debit_id: int | None
    actor_type: str
    actor_id: str
    reference: str
    created_at: datetime
    debit: Debit | None = None
    pk: int | None = None

    def model(self) -> LedgerEntry:
        return LedgerEntry(**{column: getattr(self, column) for column in _ENTRY_COLUMNS})


@dataclass
class _Posting:
    """Entries for one locked account, with the running cached balance they produce."""

    account: Account
    actor: Actor
    now: datetime
    reference: str = ""
    entries: list[_Entry] = field(default_factory=list)
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
            _Entry(
                account_id=self.account.pk,
                kind=kind,
                credits=credits,
                held_credits=held,
                balance_after=self.available,
                held_after=self.held,
                grant_id=grant.pk if grant is not None else None,
                hold_id=hold.pk if hold is not None else None,
                debit_id=debit.pk if debit is not None else None,
                actor_type=self.actor.type,
                actor_id=self.actor.id,
                reference=self.reference,
                created_at=self.now,
                debit=debit if debit is not None and debit.pk is None else None,
            )
        )

    def save(self, new_debit: Debit | None = None) -> None:
        """Write the lots' remainders, the entries and the cached balance in one statement.

        `new_debit`, unsaved, is inserted by the same statement, and its entries point at it.
        """
        deltas = [(grant_id, delta) for grant_id, delta in self.grant_deltas.items() if delta]
        if self.entries:
            account = (self.account.pk, self.available, self.held)
            _post_many([account], deltas, self.entries, [new_debit] if new_debit is not None else [])
            self.account.available_credits = self.available
            self.account.held_credits = self.held
        elif deltas:
            raise AssertionError("lot changes without ledger entries")
        self.entries = []
        self.grant_deltas = {}


_ENTRY_COLUMNS = (
    "account_id",
    "kind",
    "credits",
    "held_credits",
    "balance_after",
    "held_after",
    "grant_id",
    "hold_id",
    "debit_id",
    "actor_type",
    "actor_id",
    "reference",
    "created_at",
)


_DEBIT_COLUMNS = (
    "public_id",
    "account_id",
    "credits",
    "operation",
    "reference",
    "metadata",
    "actor_type",
    "actor_id",
    "created_at",
)


def _post_many(
    accounts: list[tuple[int, int, int]],
    deltas: list[tuple[int, int]],
    entries: list[_Entry],
    new_debits: list[Debit],
) -> None:
    """One round trip: new debits, relative lot updates, the entries, each account's balance.

    `accounts` is (id, available, held) per account. Lot remainders change relatively
    (remaining + delta), so the CHECK constraint on remaining stays the last line of defence;
    every part of the statement commits or fails together. Sets the ids of the new debits and
    of the entries.
    """
    if connection.vendor != "postgresql":
        # SQLite (the embedded default) has no data-modifying CTEs: the same writes, one by one.
        Debit.objects.bulk_create(new_debits)
        for entry in entries:
            if entry.debit is not None:
                entry.debit_id = entry.debit.pk
        for grant_id, delta in deltas:
            Grant.objects.filter(pk=grant_id).update(remaining=F("remaining") + delta)
        created = LedgerEntry.objects.bulk_create([entry.model() for entry in entries])
        for entry, row in zip(entries, created, strict=True):
            entry.pk = row.pk
        for account_id, available, held in accounts:
            Account.objects.filter(pk=account_id).update(available_credits=available, held_credits=held)
        return
    # Rows travel as JSON documents (one text parameter each): cheaper for the driver to send
    # than a typed array per column, and the statement text stays the same for any row count.
    params = {
        "grants": _rows_json([{"id": grant_id, "delta": delta} for grant_id, delta in deltas]),
        "accounts": _rows_json([{"id": a, "available": av, "held": h} for a, av, h in accounts]),
        "entries": _rows_json(
            [
                {
                    **{column: getattr(entry, column) for column in _ENTRY_COLUMNS},
                    "new_debit": entry.debit.public_id if entry.debit is not None else None,
                }
                for entry in entries
            ]
        ),
        "debits": _rows_json([{column: getattr(debit, column) for column in _DEBIT_COLUMNS} for debit in new_debits]),
    }
    written = run_posting(params, (len(entries), len(accounts), len(deltas), len(new_debits)))
    for entry, (entry_id, debit_id, *_) in zip(entries, written, strict=True):
        entry.pk = entry_id
        if entry.debit is not None:
            entry.debit_id = entry.debit.pk = debit_id
            entry.debit._state.adding = False


def run_posting(params: dict[str, str], counts: tuple[int, int, int, int]) -> list[tuple[Any, ...]]:
    """Run the posting statement; its rows, after checking it wrote `counts` rows (entries,
    accounts, lots, debits), as a last line of defence against a malformed posting."""
    with connection.cursor() as cursor:
        cursor.execute(_POSTING, params)
        written = cursor.fetchall()
    if not written or (len(written), *written[0][2:]) != counts:
        raise AssertionError(f"the posting wrote {written[0][2:] if written else ()} rows, not {counts[1:]}")
    return written


def _rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a posting value")


def _posting_sql() -> str:
    """The posting statement. Rows travel as JSON arrays of objects, so its text is the same
    whatever their number and the server keeps it prepared."""
    grants, accounts, ledger, debits = (
        Grant._meta.db_table,
        Account._meta.db_table,
        LedgerEntry._meta.db_table,
        Debit._meta.db_table,
    )
    entry_types = {
        "account_id": "bigint",
        "kind": "varchar",
        "credits": "bigint",
        "held_credits": "bigint",
        "balance_after": "bigint",
        "held_after": "bigint",
        "grant_id": "bigint",
        "hold_id": "bigint",
        "debit_id": "bigint",
        "actor_type": "varchar",
        "actor_id": "varchar",
        "reference": "varchar",
        "created_at": "timestamptz",
    }
    debit_types = {
        "public_id": "varchar",
        "account_id": "bigint",
        "credits": "bigint",
        "operation": "varchar",
        "reference": "varchar",
        "metadata": "jsonb",
        "actor_type": "varchar",
        "actor_id": "varchar",
        "created_at": "timestamptz",
    }
    assert tuple(entry_types) == _ENTRY_COLUMNS and tuple(debit_types) == _DEBIT_COLUMNS

    def rows(param: str, types: dict[str, str]) -> str:
        columns = ", ".join(f"{column} {kind}" for column, kind in types.items())
        return (
            f"ROWS FROM (json_to_recordset(%({param})s::json) AS ({columns})) "
            f"WITH ORDINALITY AS u({', '.join(types)}, n)"
        )

    entry_values = ", ".join("coalesce(u.debit_id, d.id)" if c == "debit_id" else f"u.{c}" for c in _ENTRY_COLUMNS)
    return (
        f"WITH d AS (INSERT INTO {debits} ({', '.join(_DEBIT_COLUMNS)}) "
        f"SELECT {', '.join(f'u.{c}' for c in _DEBIT_COLUMNS)} FROM {rows('debits', debit_types)} "
        "ORDER BY u.n RETURNING id, public_id), "
        f"g AS (UPDATE {grants} SET remaining = {grants}.remaining + u.delta "
        f"FROM {rows('grants', {'id': 'bigint', 'delta': 'bigint'})} WHERE {grants}.id = u.id RETURNING 1), "
        f"a AS (UPDATE {accounts} SET available_credits = u.available, held_credits = u.held "
        f"FROM {rows('accounts', {'id': 'bigint', 'available': 'bigint', 'held': 'bigint'})} "
        f"WHERE {accounts}.id = u.id RETURNING 1), "
        f"e AS (INSERT INTO {ledger} ({', '.join(_ENTRY_COLUMNS)}) "
        f"SELECT {entry_values} FROM {rows('entries', {**entry_types, 'new_debit': 'varchar'})} "
        "LEFT JOIN d ON d.public_id = u.new_debit ORDER BY u.n RETURNING id, debit_id) "
        "SELECT e.id, e.debit_id, (SELECT count(*) FROM a), (SELECT count(*) FROM g), (SELECT count(*) FROM d) "
        "FROM e ORDER BY e.id"
    )


_POSTING = _posting_sql()


# Set by request_transaction(): the spend services are then inside a transaction that any error
# rolls back whole, so they need no savepoint of their own (two round trips fewer per call).
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


def _atomic() -> transaction.Atomic:
    return transaction.atomic(savepoint=not _whole_request.get())


# The fields the money path reads; the rest (creation times, reasons, the owner) stay deferred,
# as every timestamp costs a Python-level conversion per row.
_HOT_FIELDS: dict[type, frozenset[str]] = {
    Account: frozenset(
        {
            "id",
            "public_id",
            "status",
            "period_anchor_day",
            "first_period_start",
            "free_period_start",
            "available_credits",
            "held_credits",
        }
    ),
    Grant: frozenset({"id", "account_id", "source", "amount", "remaining", "expires_at", "priority"}),
}


@functools.cache
def _hot_fields(model: type[Account] | type[Grant]) -> list[str]:
    # In the model's field order (Model.from_db fills the deferred ones in that order).
    return [f.attname for f in model._meta.concrete_fields if f.attname in _HOT_FIELDS[model]]


@functools.cache
def _columns(model: type[Account] | type[Grant]) -> str:
    # Named, not *: a prepared statement stays valid when a migration adds a column.
    return ", ".join(connection.ops.quote_name(name) for name in _hot_fields(model))


def _fetch(model: type[M], statement: str, params: list[Any]) -> list[M]:
    """Instances of `model` from a SELECT of _columns(model): the hot path's reads.

    On PostgreSQL the driver already returns every column as its Python type, so rows become
    instances directly (RawQuerySet costs several times the query here); SQLite's rows need
    the ORM's converters.
    """
    if connection.vendor != "postgresql":
        return list(model.objects.raw(statement, params))
    names = _hot_fields(model)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return [model.from_db("default", names, row) for row in cursor.fetchall()]


def _lock_account(account: Account | str | int) -> Account:
    """The one lock per account, always taken first (see the module docstring).

    Callers name the account by instance, id, or public id (the API's, so that finding the
    account and locking it is one statement); an unknown public id raises AccountNotFound.
    """
    # Raw SQL, read straight into an instance: this is the hottest statement there is.
    where, value = ("public_id", account) if isinstance(account, str) else ("id", getattr(account, "pk", account))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    found = _fetch(
        Account, f"SELECT {_columns(Account)} FROM {Account._meta.db_table} WHERE {where} = %s{lock}", [value]
    )
    if not found:
        if isinstance(account, str):
            raise AccountNotFound()
        raise Account.DoesNotExist(f"no account {value}")
    return found[0]


def _is_expired(grant: Grant, now: datetime) -> bool:
    return grant.expires_at is not None and grant.expires_at <= now


# Earliest expiry first, never-expiring last, then lower priority, then oldest.
SPEND_ORDER = (F("expires_at").asc(nulls_last=True), "priority", "created_at", "id")


def _grants_in_spend_order(account: Account) -> list[Grant]:
    # SPEND_ORDER in raw SQL (the ORM's compilation costs more than this indexed read).
    return _fetch(
        Grant,
        f"SELECT {_columns(Grant)} FROM {Grant._meta.db_table} g WHERE account_id = %s AND spendable "
        f"ORDER BY {SPEND_ORDER_SQL}",
        [account.pk],
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
        if grant.remaining == 0:  # used up by an earlier item of the same batch
            continue
        part = min(grant.remaining, left)
        taken.append((grant, part))
        left -= part
    return taken


def _lock_and_take(
    account: Account | str, credits: int, actor: Actor, reference: str, now: datetime
) -> tuple[Account, _Posting, list[tuple[Grant, int]]]:
    """The common start of a spend: lock, refuse a suspended account, settle, pick the lots."""
    locked = _lock_account(account)
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
    account: Account | str,
    credits: int,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Debit:
    _check_amount(credits)
    now = now or timezone.now()
    with _atomic():
        locked, posting, taken = _lock_and_take(account, credits, actor, reference, now)
        debit = Debit(
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
        posting.save(new_debit=debit)  # the debit is inserted by the posting's statement
    _refresh_cached(account, locked)
    return debit


def debit_refund(*, debit: Debit, actor: Actor, now: datetime | None = None) -> Debit:
    """Give a debit's credits back to the lots it took them from (once)."""
    now = now or timezone.now()
    with _atomic():
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
    account: Account | str,
    credits: int,
    expires_in: int,
    actor: Actor,
    operation: str = "",
    reference: str = "",
    now: datetime | None = None,
) -> Hold:
    _check_amount(credits)
    now = now or timezone.now()
    with _atomic():
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


def _lock_hold_account(public_id: str) -> Account:
    """Lock the account of the hold with this public id: finding and locking in one statement."""
    lock = " FOR UPDATE OF a" if connection.features.has_select_for_update_of else ""
    columns = ", ".join(f"a.{column}" for column in _columns(Account).split(", "))
    found = _fetch(
        Account,
        f"SELECT {columns} FROM {Account._meta.db_table} a JOIN {Hold._meta.db_table} h ON h.account_id = a.id "
        f"WHERE h.public_id = %s{lock}",
        [public_id],
    )
    if not found:
        raise HoldNotFound()
    return found[0]


def _lock_pending_hold(hold: Hold | str, now: datetime, actor: Actor) -> tuple[Account, Hold, _Posting]:
    """Lock the hold's account, then read the hold as it is now (by instance or public id)."""
    if isinstance(hold, str):
        locked = _lock_hold_account(hold)
        current = Hold.objects.get(public_id=hold)
    else:
        locked = _lock_account(hold.account_id)
        current = Hold.objects.get(pk=hold.pk)
    current.account = locked  # the locked row: no second read of the account
    posting = _Posting(locked, actor, now, current.reference)
    if current.status == Hold.Status.EXPIRED:
        raise HoldExpired(hold=current.public_id)
    if current.status != Hold.Status.PENDING:
        raise HoldNotPending(status=current.status)
    return locked, current, posting


def hold_capture(*, hold: Hold | str, actor: Actor, credits: int | None = None, now: datetime | None = None) -> Hold:
    """Charge all or part of a pending hold; the rest goes back to its lots.

    A hold past its expiry is released instead and comes back with status `expired`: that
    release is committed, so the caller reports the refusal without undoing it.
    """
    now = now or timezone.now()
    with _atomic():
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


def hold_release(*, hold: Hold | str, actor: Actor, now: datetime | None = None) -> Hold:
    now = now or timezone.now()
    with _atomic():
        locked, current, posting = _lock_pending_hold(hold, now, actor)
        _release_to_grants(posting, current, _hold_allocations(current))
        status = Hold.Status.EXPIRED if current.expires_at <= now else Hold.Status.RELEASED
        _mark_settled(current, status, now)
        posting.save()
    return current


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
    """A batch item's debit, or the refusal that stopped it; the balance right after it."""

    debit: Debit | None = None
    error: BillingError | None = None
    available: int = 0
    held: int = 0


def debits_create_batch(*, items: list[BatchDebit], actor: Actor, now: datetime | None = None) -> list[BatchOutcome]:
    """Many debits in one transaction; each is made or refused on its own, in the given order.

    The same protocol as debit_create, for many accounts at once: the accounts are locked with
    one statement in id order (a fixed order, so batches and single spends cannot deadlock),
    settled, charged in memory item by item, and written with a few set-based statements. An
    account with held credits or a free grant due is settled the ordinary way first.
    """
    now = now or timezone.now()
    outcomes = [BatchOutcome() for _ in items]
    if not items:
        return outcomes
    with _atomic():
        public_ids = sorted({item.account for item in items})
        if connection.vendor == "postgresql":
            # Locked in id order by one statement: LockRows takes the rows as the sort returns them.
            statement = (
                f"SELECT {_columns(Account)} FROM {Account._meta.db_table} "
                "WHERE public_id = ANY(%s::varchar[]) ORDER BY id FOR UPDATE"
            )
            locked = _fetch(Account, statement, [public_ids])
        else:  # SQLite: the IMMEDIATE transaction already holds the database's write lock
            locked = list(Account.objects.filter(public_id__in=public_ids).order_by("id"))
        accounts = {account.public_id: account for account in locked}
        states = _batch_settle(locked, actor, now)
        debits: list[Debit] = []
        for outcome, item in zip(outcomes, items, strict=True):
            account = accounts.get(item.account)
            try:
                _check_amount(item.credits)
                if account is None:
                    raise AccountNotFound()
                if account.is_suspended:
                    raise AccountSuspended()
                posting, spendable = states[account.pk]
                taken = _take(posting, spendable, item.credits)
            except BillingError as exc:
                outcome.error = exc
                continue
            debit = Debit(
                account=account,
                credits=item.credits,
                operation=item.operation,
                reference=item.reference,
                metadata=item.metadata or {},
                actor_type=actor.type,
                actor_id=actor.id,
                created_at=now,
            )
            posting.reference = item.reference
            for grant, part in taken:
                posting.add(Kind.DEBIT, credits=-part, grant=grant, debit=debit)
            debits.append(debit)
            outcome.debit = debit
            outcome.available, outcome.held = posting.available, posting.held
        _batch_save([posting for posting, _ in states.values()], debits)
    return outcomes


def _batch_settle(accounts: list[Account], actor: Actor, now: datetime) -> dict[int, tuple[_Posting, list[Grant]]]:
    """Each locked account's posting and spendable lots, reading the lots of all in one query."""
    simple = [a.pk for a in accounts if a.held_credits == 0 and free_period_due(a, now) is None]
    lots: dict[int, list[Grant]] = {pk: [] for pk in simple}
    if simple:
        for grant in Grant.objects.filter(account_id__in=simple, spendable=True).order_by("account_id", *SPEND_ORDER):
            lots[grant.account_id].append(grant)
    states = {}
    for account in accounts:
        posting = _Posting(account, actor, now)
        if account.pk in lots:
            states[account.pk] = (posting, _expire_lapsed(posting, lots[account.pk]))
        else:
            states[account.pk] = (posting, _settle(posting))  # holds or a free grant: the full way
    return states


def _batch_save(postings: list[_Posting], new_debits: list[Debit]) -> None:
    touched = [posting for posting in postings if posting.entries]
    if not touched:
        return
    deltas = [(g, d) for posting in touched for g, d in posting.grant_deltas.items() if d]
    entries = [entry for posting in touched for entry in posting.entries]
    _post_many([(p.account.pk, p.available, p.held) for p in touched], deltas, entries, new_debits)
    for posting in touched:
        posting.account.available_credits = posting.available
        posting.account.held_credits = posting.held
        posting.entries = []
        posting.grant_deltas = {}


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


def _refresh_cached(target: Account | str, locked: Account) -> None:
    if not isinstance(target, Account):
        return
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
