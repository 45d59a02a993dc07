"""Per-caller request limits, counted in the shared cache (Redis when configured)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache, caches
from rest_framework.throttling import BaseThrottle

from config.cache import ReusedClientRedisCache

from .authentication import ServicePrincipal, is_service
from .ratelimit import WINDOW_SECONDS, counter_key, current_window


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
        window = current_window(now)
        counted = getattr(request.user, "counted", None)
        if kind == "service" and counted is not None and counted[0] == window:
            count = counted[1]  # counted by the authentication's round trip to Redis
        else:
            count = _count(counter_key(kind, ident, window))
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def wait(self) -> float:
        return max(1.0, self._wait)

    def _identify(self, request) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        user = request.user
        if is_service(user):
            return "service", user.rate_ident
        if user is not None and getattr(user, "is_authenticated", False):
            return "user", str(user.pk)
        return "anon", self.get_ident(request)


def _count(key: str) -> int:
    """Add one to the window's counter and return it: one round trip to Redis."""
    backend = caches["default"]  # `cache` is a proxy: isinstance needs the backend itself
    if isinstance(backend, ReusedClientRedisCache):
        return backend.count(key, WINDOW_SECONDS * 2)
    # The embedded cache (no Redis): add() is a no-op when the key exists; incr() is atomic.
    cache.add(key, 0, timeout=WINDOW_SECONDS * 2)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS * 2)
        return 1


def service_call_allowed(principal: ServicePrincipal) -> bool:
    """Whether the service call that `principal` counted is within the limit for certain; False
    leaves the decision, and its 429, to PrincipalRateThrottle."""
    limit = settings.RATE_LIMITS.get("service", 0)
    if not limit:
        return True
    counted = principal.counted
    return counted is not None and counted[0] == current_window(time.time()) and counted[1] <= limit
