"""Writes for users and keys. Signup, which opens the account with its free credits, is
billing's (billing/signup.py)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import key_cache
from .models import Account, ServiceKey, User, UserToken
from .signals import account_suspended

# last_used_at is a hint for operators; writing it at most this often keeps auth read-only.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(raw: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: no dictionary can reach them.
    return hashlib.sha256(raw.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def service_key_create(*, name: str) -> tuple[ServiceKey, str]:
    raw = _new_secret("sk_")
    key = ServiceKey.objects.create(name=name, prefix=raw[:10], key_hash=hash_key(raw))
    return key, raw


def service_key_revoke(*, key: ServiceKey, now: datetime | None = None) -> bool:
    """Revoke the key in the database (the truth), then in the shared cache; False when the cache
    could not be told, and the key stops working within SERVICE_KEY_CACHE_SECONDS instead."""
    ServiceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    return key_cache.forget(key.key_hash)


def user_token_create(*, user: User) -> tuple[UserToken, str]:
    raw = _new_secret("ut_")
    token = UserToken.objects.create(user=user, prefix=raw[:10], key_hash=hash_key(raw))
    return token, raw


def user_token_revoke(*, token: UserToken, now: datetime | None = None) -> bool:
    """End a personal token. Tokens are checked against the database on every call: at once.
    Returns whether it was still in force (a compare-and-set: of two revocations, one does it)."""
    revoked = UserToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    return revoked == 1


def touch_last_used(model: type[ServiceKey] | type[UserToken], pk: int, now: datetime) -> None:
    # A conditional UPDATE: at most one write a minute per key, whatever the request rate.
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    model.objects.filter(stale, pk=pk).update(last_used_at=now)


def _status_set(*, account_id: int, status: str, reason: str) -> tuple[Account, bool]:
    """Set the account's status under its row lock (the lock every movement of credits takes
    first, so a spend sees the status before or after, never half of it). Returns the account
    and whether the status changed."""
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account_id)
        changed = account.status != status
        if changed:
            account.status, account.status_reason = status, reason
            account.save(update_fields=["status", "status_reason"])
            if status == Account.Status.SUSPENDED:
                # In the same transaction: the user and the integrators hear of it once it holds.
                account_suspended.send(sender=Account, account=account, reason=reason)
    return account, changed


def account_suspend(*, account_id: int, reason: str) -> tuple[Account, bool]:
    """Deactivate an account: its spends are refused (403 account_suspended) and it gets no free
    credits; its pending holds stay capturable and releasable. Suspending a suspended account
    changes nothing."""
    return _status_set(account_id=account_id, status=Account.Status.SUSPENDED, reason=reason)


def account_reactivate(*, account_id: int, reason: str) -> tuple[Account, bool]:
    """Let a suspended account spend again; an active account stays as it is."""
    return _status_set(account_id=account_id, status=Account.Status.ACTIVE, reason=reason)
