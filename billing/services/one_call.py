"""The common debit in one database call: the PostgreSQL function billing_debit().

The function (migration billing 0006, which explains it) does what debit_create and the
Idempotency-Key layer do for an account with nothing to settle, as one statement run in
autocommit mode: its own transaction, one round trip, the account lock held only while the
server runs it. It writes the same rows as debit_create (tests compare the two ledgers) and
answers `settle`, writing nothing, whenever the account needs more; the caller then runs
debit_create, which settles first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import UniqueConstraint

from billing.models import IdempotencyKey, new_debit_id
from billing.services.ledger import MAX_CREDITS_PER_REQUEST, Actor, _check_amount

DEBITED = "debited"
INSUFFICIENT = "insufficient"
REPLAY = "replay"  # the key was recorded before the call
KEY_TAKEN = "key_taken"  # the key was recorded by a concurrent request during the call
UNKNOWN_OPERATION = "unknown_operation"
SETTLE = "settle"

_CALL = (
    "SELECT outcome, credits, available, held FROM billing_debit(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
)


@dataclass(frozen=True)
class KeyRecord:
    """The Idempotency-Key a request is recorded under."""

    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class OneCallDebit:
    outcome: str
    debit_public_id: str
    credits: int | None = None
    available: int | None = None
    held: int | None = None


def one_call_available() -> bool:
    """billing_debit() exists on PostgreSQL only."""
    return connection.vendor == "postgresql"


def _key_constraint() -> str:
    for constraint in IdempotencyKey._meta.constraints:
        if isinstance(constraint, UniqueConstraint) and set(constraint.fields) == {"scope", "key"}:
            return constraint.name
    raise LookupError("IdempotencyKey has no unique constraint on (scope, key)")


def debit_create_one_call(
    *,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    actor: Actor,
    record: KeyRecord,
    body: Callable[[str], dict[str, Any]],
    now: datetime,
) -> OneCallDebit:
    """Debit `credits` (or the active `operation`'s price) from the account with this public id,
    and record `record` with the response: `body(debit public id)` plus the debit's `credits`
    and its `balance` after.
    """
    if credits is not None:
        _check_amount(credits)
    elif not operation:
        raise ValueError("a debit needs credits or an operation")
    public_id = new_debit_id()
    params = [
        account,
        credits,
        operation,
        now,
        public_id,
        reference,
        actor.type,
        actor.id,
        record.scope,
        record.key,
        record.request_hash,
        _json(body(public_id)),
    ]
    # Outside a transaction (the API's case) the call is a transaction of its own; inside one it
    # takes a savepoint, so that a key taken meanwhile rolls back only the call.
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(_CALL, params)
            outcome, charged, available, held = cursor.fetchone()
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != _key_constraint():
            raise
        return OneCallDebit(KEY_TAKEN, public_id)
    if charged is not None and not 1 <= charged <= MAX_CREDITS_PER_REQUEST:
        raise AssertionError(f"billing_debit charged {charged} credits")
    return OneCallDebit(outcome, public_id, charged, available, held)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
