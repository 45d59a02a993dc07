"""DRF's throttle for every API route (the one rate limiter, accounts.ratelimit.Limiter), the
client address every per-address limit counts, and django-axes' hooks for login lockouts."""

from __future__ import annotations

from axes.utils import reset as axes_reset
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle

from config.errors import error_body

from .authentication import is_service
from .ratelimit import client_address, limiter


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
            verdict = limiter.check("anon", client_address(request))
        self._wait = verdict.retry_after
        return verdict.allowed

    def wait(self) -> float:
        return max(1.0, self._wait)


def login_username(request, credentials: dict | None) -> str:  # type: ignore[no-untyped-def,type-arg]
    """The account a login attempt names, as stored (lower case), for django-axes' per-account
    count: the API's token route and the web and admin login forms all send it as `username`."""
    source = credentials if credentials is not None else request.POST
    return str(source.get("username") or "").strip().lower()[:254]


def login_succeeded(sender, request, user, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """A login that succeeded clears the failed logins counted against its account (the login's
    own name, as login_username stores it), and only those: the failures counted against the
    client's address stay until the cool-off, whoever logs in from it."""
    axes_reset(username=user.get_username().strip().lower()[:254])


def login_locked_out(request, original_response, credentials):  # type: ignore[no-untyped-def]
    """django-axes' answer to a login refused while locked out: 429 rate_limited with Retry-After
    for the API, a page for people."""
    wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response: HttpResponse
    if request.path.startswith("/api/"):
        message = "Too many failed logins; retry later."
        response = JsonResponse(error_body("rate_limited", message, retry_after=wait), status=429)
    else:
        response = render(request, "accounts/login_locked.html", {"minutes": wait // 60}, status=429)
    response["Retry-After"] = str(wait)
    return response
