"""Idempotency-Key handling for every POST that moves credits.

The key row is inserted in the same transaction as the credit movement. A concurrent request
with the same key blocks on the unique index until the first commits, then replays its
response; if the first rolled back, the second goes ahead. So a key moves credits at most once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import principal_scope
from billing.errors import BillingError
from billing.models import IdempotencyKey
from config.errors import ApiError, billing_error_response

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _key_from(request: Request) -> str:
    key = request.headers.get(HEADER)
    if key is None or not key.strip():
        raise ApiError(400, "idempotency_key_required", f"This request needs an {HEADER} header.")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ApiError(400, "validation_error", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
    return key


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _claim(scope: str, key: str, fingerprint: str) -> int | None:
    """Insert the key row; None when it exists already (after waiting for its writer)."""
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {table} (scope, "key", request_hash, created_at) VALUES (%s, %s, %s, %s) '
            'ON CONFLICT (scope, "key") DO NOTHING RETURNING id',
            [scope, key, fingerprint, timezone.now()],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _replay(scope: str, key: str, fingerprint: str) -> Response:
    stored = IdempotencyKey.objects.get(scope=scope, key=key)
    if stored.request_hash != fingerprint:
        raise ApiError(409, "idempotency_key_reused", "This Idempotency-Key was used with a different request.")
    response = Response(stored.response_body, status=stored.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(request: Request, handler: Callable[[], Response]) -> Response:
    """Run `handler` once per (caller, key); replay its stored response for retries.

    Validation errors (including those a service finds, such as an unknown operation) and
    unknown objects raise out of the transaction and store nothing, so a
    corrected retry with the same key is still possible; business refusals (402, 403, 409) are
    stored and replayed, as the credits they did not move are part of the answer.
    """
    key = _key_from(request)
    scope = principal_scope(request.user)
    fingerprint = _fingerprint(request)
    with transaction.atomic():
        row_id = _claim(scope, key, fingerprint)
        if row_id is None:
            return _replay(scope, key, fingerprint)
        try:
            with transaction.atomic():
                response = handler()
        except BillingError as exc:
            if exc.status_code == 400:
                raise  # bad input: store nothing, so a corrected retry can use the key
            response = billing_error_response(exc)
        IdempotencyKey.objects.filter(pk=row_id).update(status_code=response.status_code, response_body=response.data)
    return response


def idempotency_keys_purge(*, now=None) -> int:  # type: ignore[no-untyped-def]
    """Delete keys past retention (at least 24 hours, per the API contract)."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
