"""Joining the waitlist is limited per client address (settings.RATE_LIMITS["waitlist"]), by the
one rate limiter (accounts.ratelimit), on the API and the page alike."""

from __future__ import annotations

from typing import Any

from accounts.ratelimit import limiter
from accounts.throttling import PrincipalRateThrottle


class WaitlistThrottle(PrincipalRateThrottle):
    """The client address as every anonymous limit reads it (PrincipalRateThrottle.get_ident)."""

    def allow_request(self, request: Any, view: Any) -> bool:
        verdict = limiter.check("waitlist", self.get_ident(request))
        self._wait = verdict.retry_after
        return verdict.allowed
