"""The common debit or hold in one database call: the PostgreSQL function billing_spend().

The function (migration billing 0006, which explains it) does what debit_create or hold_create
and the Idempotency-Key layer do for an account with nothing to settle, as one statement run in
autocommit mode: its own transaction, one round trip, the account lock held only while the
server runs it. It writes the same rows as those services (tests compare the ledgers) and
answers `settle`, writing nothing, whenever the account needs more; the caller then runs the
service, which settles first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import UniqueConstraint

from billing.models import IdempotencyKey, new_debit_id, new_hold_id
from billing.services.ledger import MAX_CREDITS_PER_REQUEST, Actor, _check_amount

MADE = "made"
INSUFFICIENT = "insufficient"
REPLAY = "replay"  # the key was recorded before the call
KEY_TAKEN = "key_taken"  # the key was recorded by a concurrent request during the call
UNKNOWN_OPERATION = "unknown_operation"
SETTLE = "settle"

_CALL = "SELECT outcome, credits, available, held FROM billing_spend(" + ", ".join(["%s"] * 13) + ", %s::jsonb)"


@dataclass(frozen=True)
class KeyRecord:
    """The Idempotency-Key a request is recorded under."""

    scope: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class OneCall:
    outcome: str
    public_id: str
    credits: int | None = None
    available: int | None = None
    held: int | None = None


def one_call_available() -> bool:
    """billing_spend() exists on PostgreSQL only."""
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
) -> OneCall:
    """Debit `credits` (or the active `operation`'s price) from the account with this public id,
    and record `record` with the response: `body(debit public id)` plus the debit's `credits`
    and its `balance` after.
    """
    return _spend("debit", new_debit_id(), account, credits, operation, reference, None, actor, record, body, now)


def hold_create_one_call(
    *,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    expires_in: int,
    actor: Actor,
    record: KeyRecord,
    body: Callable[[str], dict[str, Any]],
    now: datetime,
) -> OneCall:
    """Hold `credits` (or the active `operation`'s price) on the account with this public id
    until `expires_in` seconds from `now`, and record `record` with the response:
    `body(hold public id)` plus the hold's `credits`.
    """
    expires_at = now + timedelta(seconds=expires_in)
    return _spend("hold", new_hold_id(), account, credits, operation, reference, expires_at, actor, record, body, now)


_CAPTURE = "SELECT outcome, body FROM billing_capture(%s, %s, %s, %s, %s, %s, %s, %s)"


def hold_capture_one_call(
    *, hold: str, credits: int | None, actor: Actor, record: KeyRecord, now: datetime
) -> tuple[str, dict[str, Any] | None]:
    """Capture `credits` (all when None) of the pending hold with this public id and record
    `record` with the answer: (outcome, the hold as the API shows it when MADE). billing_capture()
    (migration billing 0009) leaves anything but a pending, unexpired hold to hold_capture."""
    params = [hold, credits, now, actor.type, actor.id, record.scope, record.key, record.request_hash]
    row = _call(_CAPTURE, params)
    if row is None:
        return KEY_TAKEN, None
    outcome, body = row
    # Django has psycopg hand jsonb over as text (its JSONField decodes it itself).
    return outcome, json.loads(body) if isinstance(body, str) else body


def _call(statement: str, params: list[Any]) -> tuple[Any, ...] | None:
    """One call of a one-call function: its row, or None when a concurrent request recorded the
    key meanwhile (the call then rolled back whole).

    Outside a transaction (the API's case) the call is a transaction of its own; inside one it
    takes a savepoint, so that a key taken meanwhile rolls back only the call.
    """
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchone()
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != _key_constraint():
            raise
        return None


def _spend(
    kind: str,
    public_id: str,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    expires_at: datetime | None,
    actor: Actor,
    record: KeyRecord,
    body: Callable[[str], dict[str, Any]],
    now: datetime,
) -> OneCall:
    if credits is not None:
        _check_amount(credits)
    elif not operation:
        raise ValueError("a spend needs credits or an operation")
    params = [
        kind,
        account,
        credits,
        operation,
        now,
        expires_at,
        public_id,
        reference,
        actor.type,
        actor.id,
        record.scope,
        record.key,
        record.request_hash,
        _json(body(public_id)),
    ]
    row = _call(_CALL, params)
    if row is None:
        return OneCall(KEY_TAKEN, public_id)
    outcome, charged, available, held = row
    if charged is not None and not 1 <= charged <= MAX_CREDITS_PER_REQUEST:
        raise AssertionError(f"billing_spend charged {charged} credits")
    return OneCall(outcome, public_id, charged, available, held)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
