"""Idempotency-Key handling for every POST that moves credits.

A movement's function records the key with its answer in the movement's own transaction, after
the account lock (billing/sql/billing_key_record.sql); the batch route records its items' keys
in the batch's transaction (keys_store_many), in key order. A concurrent request with the same
key waits on the unique index until the first commits, finds the key taken, rolls its own work
back and replays the recorded answer; if the first rolled back, the second commits. So a key
moves credits at most once. A business refusal is recorded by `refuse`, in a transaction of its
own; bad input, unknown objects and a quota's 429 are recorded nowhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import principal_scope
from billing.errors import BillingError
from billing.models import IdempotencyKey
from config.errors import ApiError, domain_error_response

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _key_from(request: Request) -> str:
    # From META, as request.headers would find it, without building the headers' dictionary.
    key = request.META.get("HTTP_IDEMPOTENCY_KEY")
    if key is None or not key.strip():
        raise ApiError(400, "idempotency_key_required", f"This request needs an {HEADER} header.")
    if not valid_key(key):
        raise ApiError(400, "validation_error", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
    return key


def valid_key(key: str) -> bool:
    """An Idempotency-Key a request may use (a blank one is refused as missing)."""
    return bool(key.strip()) and len(key) <= MAX_KEY_LENGTH and key.isprintable() and key.isascii()


def fingerprint(method: str, path: str, data: Any) -> str:
    """What a key is bound to: the route and the parsed body (a batch item hashes as its single call)."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{body}".encode()).hexdigest()


def _fingerprint(request: Request) -> str:
    return fingerprint(request.method or "", request.path, request.data)


def replay(scope: str, key: str, request_hash: str) -> Response:
    stored = IdempotencyKey.objects.get(scope=scope, key=key)
    if stored.request_hash != request_hash:
        raise ApiError(409, "idempotency_key_reused", "This Idempotency-Key was used with a different request.")
    response = Response(stored.response_body, status=stored.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def keys_stored(scope: str, keys: Iterable[str]) -> dict[str, IdempotencyKey]:
    """The keys of `keys` already recorded for this caller."""
    return {row.key: row for row in IdempotencyKey.objects.filter(scope=scope, key__in=list(keys))}


def keys_store_many(scope: str, rows: list[tuple[str, str, int, Any]]) -> bool:
    """Record (key, fingerprint, status, body) rows in key order; False if any key was taken.

    Key order is a fixed order, so two batches that share keys wait for each other instead of
    deadlocking; the caller rolls back and reads the taken keys as replays.
    """
    if not rows:
        return True
    rows = sorted(rows, key=lambda row: row[0])
    now = timezone.now()
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        # One JSON document for all rows: one statement text, one parameter to send.
        document = json.dumps(
            [{"k": key, "h": request_hash, "s": status, "b": body} for key, request_hash, status, body in rows],
            cls=DjangoJSONEncoder,
        )
        cursor.execute(
            f'INSERT INTO {table} (scope, "key", request_hash, created_at, status_code, response_body) '
            "SELECT %(scope)s, u.k, u.h, %(now)s, u.s, u.b FROM ROWS FROM (json_to_recordset(%(rows)s::json) "
            "AS (k varchar, h varchar, s integer, b jsonb)) WITH ORDINALITY AS u(k, h, s, b, n) ORDER BY u.n "
            'ON CONFLICT (scope, "key") DO NOTHING RETURNING id',
            {"scope": scope, "now": now, "rows": document},
        )
        return len(cursor.fetchall()) == len(rows)


class KeyTaken(Exception):
    """Raised inside the transaction to roll back a request whose key was recorded meanwhile."""


def stored_refusal(exc: BillingError) -> bool:
    """Refusals that are stored under the key; bad input and unknown objects are not, so a
    corrected retry can still use it, nor a quota's 429, so the same request succeeds after
    Retry-After."""
    return exc.status_code not in (400, 404, 429)


def refuse(scope: str, key: str, request_hash: str, exc: BillingError) -> Response:
    """Record a business refusal under the key, in a transaction of its own, and answer it; if
    the key was recorded meanwhile, answer what was recorded."""
    refusal = domain_error_response(exc)
    with transaction.atomic():
        if not keys_store_many(scope, [(key, request_hash, refusal.status_code, refusal.data)]):
            return replay(scope, key, request_hash)
    return refusal


def request_key(request: Request) -> tuple[str, str, str]:
    """The request's (scope, key, fingerprint); a missing or malformed key is a 400."""
    return principal_scope(request.user), _key_from(request), _fingerprint(request)


def idempotency_keys_purge(*, now=None) -> int:  # type: ignore[no-untyped-def]
    """Delete keys past retention (at least 24 hours, per the API contract)."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
