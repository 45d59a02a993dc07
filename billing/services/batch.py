"""The batch route's common debits, written without a Django model per row (PostgreSQL).

debits_create_batch (billing.services.ledger) builds an Account, Grant and Debit instance per
row and settles each account the general way. For the accounts that have nothing to settle
(active, no pending hold past its expiry, the current period's free grant made, no lot past its
expiry) this module does the same work on plain values: it locks every account of the batch in
id order with one statement, reads their lots in spend order with one more, charges the items
in memory in the given order, and writes the debits, entries, lot remainders and balances with
the ledger's posting statement. The rows are those debits_create_batch writes (tests compare
the two ledgers). An item whose account needs more is left to debits_create_batch, in the same
transaction, after this; the accounts it locks are then held already.

The lock is held until the transaction commits, so what runs between the lock and the commit
is kept to the two reads, the charging and one write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection

from billing.errors import InsufficientCredits
from billing.models import new_debit_id
from billing.periods import month_bounds
from billing.selectors import FREE_GRANT_DUE_SQL, SPEND_ORDER_SQL
from billing.services.ledger import MAX_CREDITS_PER_REQUEST, Actor, BatchDebit, run_posting

# Every account of the batch, locked in id order by one statement (LockRows takes the rows as
# the sort returns them, so batches and single spends cannot deadlock), with whether it may be
# charged here. FOR UPDATE returns the row version it locked, so `plain` is decided on the
# values the lock protects.
_LOCK = (
    "SELECT a.id, a.public_id, a.available_credits, a.held_credits, "
    "a.status = 'active' AND NOT " + FREE_GRANT_DUE_SQL + " AS plain "
    "FROM accounts_account a WHERE a.public_id = ANY(%(accounts)s::varchar[]) ORDER BY a.id FOR UPDATE"
)

# The lots of the plain accounts in spend order, read after the lock is granted.
_LOTS = (
    "SELECT g.account_id, g.id, g.remaining, g.expires_at <= %(now)s FROM billing_grant g "
    "WHERE g.account_id = ANY(%(ids)s::bigint[]) AND g.spendable "
    "ORDER BY g.account_id, " + SPEND_ORDER_SQL
)

# Accounts with a pending hold past its expiry: the general path releases it first.
_LAPSED_HOLDS = (
    "SELECT DISTINCT h.account_id FROM billing_hold h WHERE h.account_id = ANY(%(ids)s::bigint[]) "
    "AND h.status = 'pending' AND h.expires_at <= %(now)s"
)


@dataclass(frozen=True)
class PlainDebit:
    """A debit made here: its public id and the account's balance right after it."""

    public_id: str
    available: int
    held: int


PlainOutcome = PlainDebit | InsufficientCredits | None  # None: left to debits_create_batch


@dataclass
class _Account:
    id: int
    available: int
    held: int
    lots: list[list[int]]  # [lot id, remaining] in spend order
    original: list[int]  # each lot's remaining as read
    spendable: int


def debits_create_plain(*, items: list[BatchDebit], actor: Actor, now: datetime) -> list[PlainOutcome]:
    """Charge the items whose accounts have nothing to settle; must run inside the batch's
    transaction. Per item: the debit made, the refusal (not enough credits), or None for an
    item to hand to debits_create_batch."""
    if connection.vendor != "postgresql" or not connection.in_atomic_block:
        raise RuntimeError("debits_create_plain runs inside a PostgreSQL transaction")
    outcomes: list[PlainOutcome] = [None] * len(items)
    if not items:
        return outcomes
    public_ids = [new_debit_id() for _ in items]  # made before the lock: it is held until commit
    accounts = _lock_plain_accounts(sorted({item.account for item in items}), now)
    if not accounts:
        return outcomes
    created_at = now.isoformat()
    debits: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        account = accounts.get(item.account)
        credits = item.credits
        if account is None or type(credits) is not int or not 0 < credits <= MAX_CREDITS_PER_REQUEST:
            continue  # unknown, something to settle, or an amount the general path refuses
        if account.spendable < credits:
            outcomes[index] = InsufficientCredits(available=account.spendable, requested=credits)
            continue
        public_id = public_ids[index]
        debits.append(
            {
                "public_id": public_id,
                "account_id": account.id,
                "credits": credits,
                "operation": item.operation,
                "reference": item.reference,
                "metadata": item.metadata or {},
                "actor_type": actor.type,
                "actor_id": actor.id,
                "created_at": created_at,
            }
        )
        left = credits
        for lot in account.lots:
            if left == 0:
                break
            part = min(lot[1], left)
            if part == 0:
                continue
            lot[1] -= part
            left -= part
            account.available -= part
            entries.append(
                {
                    "account_id": account.id,
                    "kind": "debit",
                    "credits": -part,
                    "held_credits": 0,
                    "balance_after": account.available,
                    "held_after": account.held,
                    "grant_id": lot[0],
                    "hold_id": None,
                    "debit_id": None,
                    "actor_type": actor.type,
                    "actor_id": actor.id,
                    "reference": item.reference,
                    "created_at": created_at,
                    "new_debit": public_id,
                }
            )
        account.spendable -= credits
        outcomes[index] = PlainDebit(public_id, account.available, account.held)
    if debits:
        _write(accounts, debits, entries)
    return outcomes


def _lock_plain_accounts(public_ids: list[str], now: datetime) -> dict[str, _Account]:
    """Lock every account of the batch; the plain ones with their lots, by public id."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK, {"accounts": public_ids, **month_bounds(now).params})
        rows = cursor.fetchall()
        plain = {row[0]: _Account(row[0], row[2], row[3], [], [], 0) for row in rows if row[4]}
        held = [pk for pk, account in plain.items() if account.held > 0]
        if held:
            cursor.execute(_LAPSED_HOLDS, {"ids": held, "now": now})
            for (pk,) in cursor.fetchall():
                del plain[pk]
        if plain:
            cursor.execute(_LOTS, {"ids": list(plain), "now": now})
            lapsed = set()
            for account_id, lot_id, remaining, expired in cursor.fetchall():
                if expired:  # a lot past its expiry: the general path expires it first
                    lapsed.add(account_id)
                plain[account_id].lots.append([lot_id, remaining])
                plain[account_id].original.append(remaining)
                plain[account_id].spendable += remaining
            for pk in lapsed:
                del plain[pk]
    return {row[1]: plain[row[0]] for row in rows if row[0] in plain}


def _write(accounts: dict[str, _Account], debits: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """The ledger's posting statement (billing.services.ledger.run_posting) with these rows."""
    touched = {entry["account_id"] for entry in entries}
    changed = [account for account in accounts.values() if account.id in touched]
    deltas = [
        {"id": lot_id, "delta": remaining - original}
        for account in changed
        for (lot_id, remaining), original in zip(account.lots, account.original, strict=True)
        if remaining != original
    ]
    params = {
        "grants": _dumps(deltas),
        "accounts": _dumps([{"id": a.id, "available": a.available, "held": a.held} for a in changed]),
        "entries": _dumps(entries),
        "debits": _dumps(debits),
    }
    run_posting(params, (len(entries), len(changed), len(deltas), len(debits)))


def _dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, separators=(",", ":"))
