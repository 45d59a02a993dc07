"""Who is calling: a service key, an end user's token, or an end user's session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeGuard

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from . import key_cache
from .models import ServiceKey, User, UserToken
from .ratelimit import Counted, client_address, limiter
from .services import LAST_USED_RESOLUTION, hash_key, touch_last_used

# Every service key's calls record their Idempotency-Keys in this one scope: the generation
# service is one caller whichever of its keys it uses, so a retry sent after rotating its key
# replays the first answer instead of charging again.
SERVICE_SCOPE = "svc"


@dataclass(frozen=True)
class ServicePrincipal:
    """The request.user of a call made with a service key."""

    key_id: int
    name: str
    # The rate limit counts per key hash (known before the key is looked up), so authentication
    # reads the key and counts the call in one round trip; the throttle then uses `counted`.
    rate_ident: str = ""
    counted: Counted | None = None
    is_authenticated: bool = True
    is_service: bool = True

    @property
    def scope(self) -> str:
        return SERVICE_SCOPE


def principal_scope(user: object) -> str:
    if isinstance(user, ServicePrincipal):
        return user.scope
    return f"user:{getattr(user, 'pk', '')}"


class BearerAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        try:
            return self._authenticate(request)
        except exceptions.AuthenticationFailed:
            refused_as_anonymous(request)
            raise

    def _authenticate(self, request):  # type: ignore[no-untyped-def]
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        # The scheme's name is case-insensitive (RFC 9110, 11.1): "bearer" is "Bearer".
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <key>'.")
        raw = parts[1]
        if len(raw) > 200 or not raw.isascii():
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if raw.startswith("sk_"):
            return service_principal(raw, now), None
        return self._user_token(raw, now)

    def _user_token(self, raw: str, now):  # type: ignore[no-untyped-def]
        made_after = now - timedelta(days=settings.USER_TOKEN_LIFETIME_DAYS)  # older ones have expired
        valid = UserToken.objects.filter(key_hash=hash_key(raw), revoked_at__isnull=True, created_at__gt=made_after)
        token = valid.select_related("user").first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        touch_last_used(UserToken, token.pk, now)
        return token.user, token

    def authenticate_header(self, request) -> str:  # type: ignore[no-untyped-def]
        return self.keyword


def refused_as_anonymous(request) -> None:  # type: ignore[no-untyped-def]
    """A call whose key or token was refused is an anonymous call of its address: it counts
    against the address's `anon` limit, and once the address is over it the answer is 429
    rate_limited instead of 401, so guessing keys costs a caller its address's budget."""
    verdict = limiter.check("anon", client_address(request))
    if not verdict.allowed:
        raise exceptions.Throttled(wait=max(1.0, verdict.retry_after))


def service_principal(raw: str, now: datetime) -> ServicePrincipal:
    """The caller of a service key, with the call counted for its rate limit.

    The generation service calls on every request: the key's check is read from the shared
    cache in the limiter's round trip, and trusted only while it is recent
    (accounts/key_cache.py); otherwise the database decides, and last_used_at is written when
    it is a minute old (a busy key writes it about once a minute, not per call).
    """
    digest = hash_key(raw)
    rate_ident = key_cache.rate_ident(digest)
    counted, entry = limiter.count("service", rate_ident, read=key_cache.cache_key(digest))
    known = key_cache.trusted(entry, now)
    if known == key_cache.REVOKED:
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    if not isinstance(known, tuple):
        unrevoked = ServiceKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
        key = unrevoked.only("id", "name", "last_used_at").first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            touch_last_used(ServiceKey, key.pk, now)
        key_cache.remember(digest, key.pk, key.name, checked=now)
        known = (key.pk, key.name)
    key_id, name = known
    return ServicePrincipal(key_id=key_id, name=name, rate_ident=rate_ident, counted=counted)


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """Django session login for the web pages; CSRF is enforced as DRF does."""


def is_service(user: object) -> TypeGuard[ServicePrincipal]:
    return isinstance(user, ServicePrincipal)


def is_end_user(user: object) -> bool:
    return isinstance(user, User) and user.is_active
