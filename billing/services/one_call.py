"""The common debit or hold in one database call: the PostgreSQL function billing_spend().

The function (migration billing 0006, which explains it) does what debit_create or hold_create
and the Idempotency-Key layer do for an account with nothing to settle, as one statement run in
autocommit mode: its own transaction, one round trip, the account lock held only while the
server runs it. It writes the same rows as those services (tests compare the ledgers) and
answers `settle`, writing nothing, whenever the account needs more; the caller then runs the
service, which settles first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import UniqueConstraint

from billing.models import ActorType, IdempotencyKey, new_debit_id, new_hold_id
from billing.services.ledger import MAX_CREDITS_PER_REQUEST, Actor, _check_amount

MADE = "made"
INSUFFICIENT = "insufficient"
REPLAY = "replay"  # the key was recorded before the call
KEY_TAKEN = "key_taken"  # the key was recorded by a concurrent request during the call
UNKNOWN_OPERATION = "unknown_operation"
SETTLE = "settle"
KEY_REFUSED = "key_refused"  # no unrevoked service key has the hash given (debit_create_keyed)

_CALL = "SELECT outcome, credits, available, held FROM billing_spend(" + ", ".join(["%s"] * 13) + ", %s::jsonb)"
# The same call made only for the unrevoked service key with a given hash, as that key: its id is
# the actor, and its scope (the prefix given, then the id) the Idempotency-Key's. With no such key
# there is no row to call the function for: nothing is written and no row comes back.
_KEYED_CALL = (
    "SELECT s.outcome, s.credits, s.available, s.held, k.id, k.name FROM accounts_servicekey k "
    "CROSS JOIN LATERAL billing_spend(%s, %s, %s, %s, %s, %s, %s, %s, %s, k.id::text, %s || k.id, %s, %s, %s::jsonb) s "
    "WHERE k.key_hash = %s AND k.revoked_at IS NULL"
)


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
    # The service key the call was made as (debit_create_keyed): (id, name).
    key: tuple[int, str] | None = None


@functools.cache
def one_call_available() -> bool:
    """billing_spend() exists on PostgreSQL only (the database vendor is fixed for the process:
    asked once, not through the connection proxy on every request)."""
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
    return _spend(
        _CALL,
        kind="debit",
        public_id=new_debit_id(),
        account=account,
        credits=credits,
        operation=operation,
        reference=reference,
        expires_at=None,
        body=body,
        now=now,
        **_recorded_as(actor, record),
    )


def debit_create_keyed(
    *,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    key_hash: str,
    scope_prefix: str,
    key: str,
    request_hash: str,
    body: Callable[[str], dict[str, Any]],
    now: datetime,
) -> OneCall:
    """debit_create_one_call made as the unrevoked service key with hash `key_hash`, checked in
    the same statement: the key's id is the actor, and `scope_prefix` followed by that id the scope
    the Idempotency-Key `key` is recorded under. KEY_REFUSED, with nothing written, when no
    unrevoked key has the hash; any other outcome comes with the key's (id, name)."""
    return _spend(
        _KEYED_CALL,
        kind="debit",
        public_id=new_debit_id(),
        account=account,
        credits=credits,
        operation=operation,
        reference=reference,
        expires_at=None,
        who=[ActorType.SERVICE.value, scope_prefix],  # the actor's id and the scope come from the key
        key=key,
        request_hash=request_hash,
        body=body,
        now=now,
        extra=(key_hash,),
    )


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
    return _spend(
        _CALL,
        kind="hold",
        public_id=new_hold_id(),
        account=account,
        credits=credits,
        operation=operation,
        reference=reference,
        expires_at=now + timedelta(seconds=expires_in),
        body=body,
        now=now,
        **_recorded_as(actor, record),
    )


_CAPTURE = "SELECT outcome, body FROM billing_capture(%s, %s, %s, %s, %s, %s, %s, %s)"


def hold_capture_one_call(
    *, hold: str, credits: int | None, actor: Actor, record: KeyRecord, now: datetime
) -> tuple[str, dict[str, Any] | None]:
    """Capture `credits` (all when None) of the pending hold with this public id and record
    `record` with the answer: (outcome, the hold as the API shows it when MADE). billing_capture()
    (migration billing 0009) leaves anything but a pending, unexpired hold to hold_capture."""
    params = [hold, credits, now, actor.type, actor.id, record.scope, record.key, record.request_hash]
    taken, row = _call(_CAPTURE, params)
    if taken:
        return KEY_TAKEN, None
    assert row is not None  # the function answers one row
    outcome, body = row
    # Django has psycopg hand jsonb over as text (its JSONField decodes it itself).
    return outcome, json.loads(body) if isinstance(body, str) else body


def _call(statement: str, params: list[Any]) -> tuple[bool, tuple[Any, ...] | None]:
    """One call of a one-call function: (False, its row, or None for none), or (True, None) when a
    concurrent request recorded the key meanwhile (the call then rolled back whole).

    Outside a transaction (the API's case) the call is a transaction of its own; inside one it
    takes a savepoint, so that a key taken meanwhile rolls back only the call.
    """
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(statement, params)
            return False, cursor.fetchone()
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != _key_constraint():
            raise
        return True, None


def _recorded_as(actor: Actor, record: KeyRecord) -> dict[str, Any]:
    """_spend()'s arguments for a spend by `actor`, recorded under `record`."""
    return {"who": [actor.type, actor.id, record.scope], "key": record.key, "request_hash": record.request_hash}


def _spend(
    statement: str,
    *,
    kind: str,
    public_id: str,
    account: str,
    credits: int | None,
    operation: str,
    reference: str,
    expires_at: datetime | None,
    who: list[str],
    key: str,
    request_hash: str,
    body: Callable[[str], dict[str, Any]],
    now: datetime,
    extra: tuple[str, ...] = (),
) -> OneCall:
    """billing_spend() in `statement`, with its arguments in order: `who` stands for those
    between the reference and the Idempotency-Key (the actor and the scope, or what the statement
    makes them from), `extra` for the statement's own after them. A statement that answers the
    key it ran as (_KEYED_CALL) has two more columns, and no row when there is no such key."""
    if credits is not None:
        _check_amount(credits)
    elif not operation:
        raise ValueError("a spend needs credits or an operation")
    params = [kind, account, credits, operation, now, expires_at, public_id, reference, *who, key, request_hash]
    taken, row = _call(statement, [*params, _json(body(public_id)), *extra])
    if taken:
        return OneCall(KEY_TAKEN, public_id)
    if row is None:
        return OneCall(KEY_REFUSED, public_id)
    outcome, charged, available, held, *made_as = row
    if charged is not None and not 1 <= charged <= MAX_CREDITS_PER_REQUEST:
        raise AssertionError(f"billing_spend charged {charged} credits")
    return OneCall(outcome, public_id, charged, available, held, (made_as[0], made_as[1]) if made_as else None)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
