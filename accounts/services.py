"""Writes for users and keys. Signup, which opens the account with its free credits, is
billing's (billing/signup.py)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from .models import Account, ServiceKey, User, UserToken

# How long a checked service key is trusted from the shared cache; revocation clears it at once.
SERVICE_KEY_CACHE_SECONDS = 300
# last_used_at is a hint for operators; writing it at most this often keeps auth read-only.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(raw: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: no dictionary can reach them.
    return hashlib.sha256(raw.encode()).hexdigest()


def account_for_user(user: User) -> Account:
    return Account.objects.get(user=user)


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def service_key_create(*, name: str) -> tuple[ServiceKey, str]:
    raw = _new_secret("sk_")
    key = ServiceKey.objects.create(name=name, prefix=raw[:10], key_hash=hash_key(raw))
    return key, raw


def service_key_cache_key(key_hash: str) -> str:
    return f"svckey:{key_hash}"


def service_key_revoke(*, key: ServiceKey, now: datetime | None = None) -> None:
    ServiceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now or timezone.now())
    # Authentication trusts the cache for SERVICE_KEY_CACHE_SECONDS: forget the key now.
    cache.delete(service_key_cache_key(key.key_hash))


def user_token_create(*, user: User) -> tuple[UserToken, str]:
    raw = _new_secret("ut_")
    token = UserToken.objects.create(user=user, prefix=raw[:10], key_hash=hash_key(raw))
    return token, raw


def touch_last_used(model: type[ServiceKey] | type[UserToken], pk: int, now: datetime) -> None:
    # A conditional UPDATE: at most one write a minute per key, whatever the request rate.
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    model.objects.filter(stale, pk=pk).update(last_used_at=now)
