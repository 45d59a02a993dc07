"""Per-caller request limits, counted in the shared cache (Redis when configured)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.throttling import BaseThrottle

from .authentication import is_service

WINDOW_SECONDS = 60


class PrincipalRateThrottle(BaseThrottle):
    """A fixed one-minute window per service key, user, or client address.

    The counter is an atomic cache increment, so parallel workers share one budget.
    """

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        kind, ident = self._identify(request)
        limit = settings.RATE_LIMITS.get(kind, 0)
        if not limit:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = _count(f"rl:{kind}:{ident}:{window}")
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float:
        return max(1.0, self._wait)

    def _identify(self, request) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        user = request.user
        if is_service(user):
            return "service", str(user.key_id)
        if user is not None and getattr(user, "is_authenticated", False):
            return "user", str(user.pk)
        return "anon", self.get_ident(request)


def _count(key: str) -> int:
    """Add one to the window's counter and return it: one round trip to Redis."""
    backend = caches["default"]  # `cache` is a proxy: isinstance needs the backend itself
    if isinstance(backend, RedisCache):
        full_key = backend.make_and_validate_key(key)
        client = backend._cache.get_client(full_key, write=True)
        # INCR creates the counter at 1; the expiry is set once, when the window's key is new.
        pipeline = client.pipeline(transaction=False)
        pipeline.incr(full_key)
        pipeline.expire(full_key, WINDOW_SECONDS * 2, nx=True)
        count, _ = pipeline.execute()
        return int(count)
    # The embedded cache (no Redis): add() is a no-op when the key exists; incr() is atomic.
    cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS * 2)
        return 1
