"""Who is calling: a service key, an end user's token, or an end user's session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache, caches
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions

from config.cache import PendingCount, ReusedClientRedisCache

from .models import ServiceKey, User, UserToken
from .ratelimit import WINDOW_SECONDS, count_leases, counter_key, current_window
from .services import (
    LAST_USED_RESOLUTION,
    SERVICE_KEY_CACHE_SECONDS,
    hash_key,
    service_key_cache_key,
    touch_last_used,
)

# The request attribute a route sets when it checked the service key itself: the principal, or
# the AuthenticationFailed to raise.
SERVICE_KEY_CHECKED = "_billing_service_key_checked"

# A service key's calls record their Idempotency-Keys under this prefix and the key's id.
SERVICE_SCOPE_PREFIX = "svc:"


@dataclass(frozen=True)
class ServicePrincipal:
    """The request.user of a call made with a service key."""

    key_id: int
    name: str
    # The rate limit counts per key hash (known before the key is looked up), so authentication
    # can read the key and count the request in one round trip: `counted` is (window, count).
    rate_ident: str = ""
    counted: tuple[int, int] | None = None
    is_authenticated: bool = True
    is_service: bool = True

    @property
    def scope(self) -> str:
        return f"{SERVICE_SCOPE_PREFIX}{self.key_id}"


def principal_scope(user: object) -> str:
    if isinstance(user, ServicePrincipal):
        return user.scope
    return f"user:{getattr(user, 'pk', '')}"


class BearerAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        # A route that checked the service key before DRF's dispatch (billing.api.BalanceView)
        # hands over its outcome: the key is read, and the request counted, once.
        checked = getattr(request._request, SERVICE_KEY_CHECKED, None)
        if isinstance(checked, exceptions.AuthenticationFailed):
            raise checked
        if checked is not None:
            return checked, None
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <key>'.")
        raw = parts[1]
        if len(raw) > 200 or not raw.isascii():
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if raw.startswith("sk_"):
            return service_principal(raw, now), None
        return self._user_token(raw, now)

    def _user_token(self, raw: str, now):  # type: ignore[no-untyped-def]
        token = UserToken.objects.filter(key_hash=hash_key(raw), revoked_at__isnull=True).select_related("user").first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        touch_last_used(UserToken, token.pk, now)
        return token.user, token

    def authenticate_header(self, request) -> str:  # type: ignore[no-untyped-def]
        return self.keyword


def service_key_of(request: HttpRequest) -> str | None:
    """The service key of a well-formed `Authorization: Bearer sk_...` header, else None."""
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0] != BearerAuthentication.keyword:
        return None
    raw = parts[1]
    return raw if raw.startswith("sk_") and len(raw) <= 200 and raw.isascii() else None


def service_principal(raw: str, now: datetime) -> ServicePrincipal:
    """The caller of a service key, with the request counted for its rate limit.

    The generation service calls on every request: a valid key is remembered in the shared
    cache, and revoking it deletes that entry (accounts.services.service_key_revoke).
    """
    return PendingPrincipal(raw, now).result()


class PendingPrincipal:
    """service_principal() in two steps: made, it sends the key check and the count to Redis;
    result() reads the answer. In between the caller may do other work (the balance route
    reads the balance), so that the two round trips overlap. result() or abandon() must follow.
    """

    def __init__(self, raw: str, now: datetime, *, calls: int = 1, window: int | None = None) -> None:
        """`calls`: how many calls to count (the first is this one; LeasedServiceCall hands out
        the others); `window`: the rate-limit window, if the caller has it already."""
        self.now = now
        self.digest = hash_key(raw)
        self.rate_ident = self.digest[:32]
        self.cache_key = service_key_cache_key(self.digest)
        self.window = current_window(time.time()) if window is None else window
        backend = caches["default"]
        self.pending: PendingCount | None = None
        # The counter as the round trip left it (None without Redis, or before result()).
        self.counter: int | None = None
        self.calls = calls
        if isinstance(backend, ReusedClientRedisCache):
            counter = counter_key("service", self.rate_ident, self.window)
            self.pending = backend.start_get_and_count(self.cache_key, counter, WINDOW_SECONDS * 2, calls)

    def result(self) -> ServicePrincipal:
        counted = None
        if self.pending is not None:
            cached, self.counter = self.pending.result()
            counted = (self.window, self.counter - self.calls + 1)
        else:
            cached = cache.get(self.cache_key)
        if cached is None:
            key = ServiceKey.objects.filter(key_hash=self.digest, revoked_at__isnull=True).only("id", "name").first()
            if key is None:
                raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
            cached = (key.pk, key.name, None)
        key_id, name, touched = cached
        # The entry also remembers when this key's last_used_at was last written (on the
        # application clock), so a busy key writes it about once a minute, not per request.
        now = self.now
        if touched is None or now - datetime.fromtimestamp(touched, UTC) >= LAST_USED_RESOLUTION:
            touch_last_used(ServiceKey, key_id, now)
            cache.set(self.cache_key, (key_id, name, now.timestamp()), SERVICE_KEY_CACHE_SECONDS)
        return ServicePrincipal(key_id=key_id, name=name, rate_ident=self.rate_ident, counted=counted)

    def abandon(self) -> None:
        if self.pending is not None:
            self.pending.abandon()


class LeasedServiceCall:
    """The key check and rate-limit count of a call to a route whose database statement checks
    the service key itself (the balance read: billing.selectors.balance_json_checked; the debit:
    billing.services.one_call.debit_create_keyed).

    The key is checked against the database on every call, so such a call needs Redis only to be
    counted, and this process counts a busy key's calls in blocks (accounts.ratelimit): a call
    takes the next number of its block without a round trip, and when none is left it goes to
    Redis as PendingPrincipal does (the cached key, last_used_at, the DB lookup on a miss),
    counting the next calls too. Made, it starts that round trip if one is needed; result()
    follows the statement, or abandon() when the statement failed. A statement that writes must
    know the rate-limit decision first: counted() settles the round trip before it, and
    within_limit() tells for a number taken from the block.
    """

    def __init__(self, raw: str, now: datetime) -> None:
        self.digest = hash_key(raw)
        self.rate_ident = self.digest[:32]
        self.window = current_window(time.time())
        self.number = count_leases.take(self.rate_ident, self.window)
        self.pending: PendingPrincipal | None = None
        if self.number is None:
            limit = settings.RATE_LIMITS.get("service", 0)
            calls = count_leases.size(self.rate_ident, self.window, limit)
            self.pending = PendingPrincipal(raw, now, calls=calls, window=self.window)

    def result(self, key: tuple[int, str] | None) -> ServicePrincipal:
        """The caller, given the key as the route's statement found it: (id, name), or None
        when no unrevoked key has this hash. Raises AuthenticationFailed as authentication does."""
        principal = self.counted()
        if principal is not None:
            if key is None or key[0] != principal.key_id:  # revoked since Redis cached it
                raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
            return principal
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        assert self.number is not None  # no round trip: the call took a number of its block
        return ServicePrincipal(
            key_id=key[0], name=key[1], rate_ident=self.rate_ident, counted=(self.window, self.number)
        )

    def counted(self) -> ServicePrincipal | None:
        """The caller, when the call went to Redis: its key as Redis or the database has it (the
        statement then checks it again), with the call counted. None when the call took a number
        of its block: result() then follows the statement, with the key the statement found."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        principal = pending.result()
        if pending.counter is not None:
            count_leases.keep(self.rate_ident, self.window, pending.counter, pending.calls)
        return principal

    def within_limit(self) -> bool:
        """Whether the number the call took of its block is within the service rate limit."""
        limit = settings.RATE_LIMITS.get("service", 0)
        return not limit or (self.number is not None and self.number <= limit)

    def result_from_database(self) -> ServicePrincipal:
        """result() for a call that no statement of the route checked: its key read from the
        database, so that the route can hand the call over counted once."""
        key = ServiceKey.objects.filter(key_hash=self.digest, revoked_at__isnull=True).values_list("id", "name").first()
        return self.result(key)

    def abandon(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.abandon()


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """Django session login for the web pages; CSRF is enforced as DRF does."""


def is_service(user: object) -> bool:
    return isinstance(user, ServicePrincipal)


def is_end_user(user: object) -> bool:
    return isinstance(user, User) and user.is_active
