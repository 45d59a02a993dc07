"""DRF's throttle for every API route: the one rate limiter (accounts.ratelimit.Limiter)."""

from __future__ import annotations

from rest_framework.throttling import BaseThrottle

from .authentication import is_service
from .ratelimit import limiter


class PrincipalRateThrottle(BaseThrottle):
    """A fixed one-minute window per service key, user, or client address.

    The counter lives in the shared cache, so parallel workers share one budget. A service key's
    call was counted by its authentication already, in the same round trip as its key check.
    """

    def allow_request(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        user = request.user
        if is_service(user):
            verdict = limiter.check("service", user.rate_ident, counted=user.counted)
        elif user is not None and getattr(user, "is_authenticated", False):
            verdict = limiter.check("user", str(user.pk))
        else:
            verdict = limiter.check("anon", self.get_ident(request))
        self._wait = verdict.retry_after
        return verdict.allowed

    def wait(self) -> float:
        return max(1.0, self._wait)
