"""The email verification pages: the link signup emails opens a page whose button verifies the
email (a POST, so a mail scanner fetching the link verifies nothing), which releases the account's
first free credits (billing.signup.email_verify); a logged-in user waiting for the link may have
it sent again."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Account, User
from accounts.ratelimit import limiter
from accounts.tasks import send_verification_email
from accounts.verification import VerificationLinkInvalid, email_verification_user
from billing.signup import email_verify

TEMPLATE = "accounts/verify_email.html"


def _page(request: HttpRequest, state: str, status: int = 200, **context: Any) -> HttpResponse:
    return render(request, TEMPLATE, {"state": state, **context}, status=status)


@require_http_methods(["GET", "POST"])
def verify_email_page(request: HttpRequest) -> HttpResponse:
    token = (request.POST if request.method == "POST" else request.GET).get("token", "")
    if not token:
        return _waiting_page(request)
    try:
        if request.method == "GET":
            return _page(request, "confirm", token=token, email=email_verification_user(token).email)
        user, verified_now = email_verify(token=token)
    except VerificationLinkInvalid as invalid:
        return _page(request, "invalid", status=400, message=invalid.message)
    # A suspended account gets no free credits: they arrive when it is restored (billing_free_due).
    suspended = Account.objects.filter(user=user, status=Account.Status.SUSPENDED).exists()
    return _page(request, "verified", email=user.email, verified_now=verified_now, suspended=suspended)


@login_required
def _waiting_page(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)
    return _page(request, "verified" if user.email_verified_at else "pending", email=user.email)


@require_POST
@login_required
def verify_email_send(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)
    if user.email_verified_at:
        return _page(request, "verified", email=user.email)
    verdict = limiter.check("verification_email", str(user.pk))
    if not verdict.allowed:
        return _page(request, "pending", status=429, email=user.email, retry_after=int(verdict.retry_after) + 1)
    send_verification_email.delay(user.pk)
    return _page(request, "pending", email=user.email, sent=True)
