"""The billing page's notification and auto-recharge settings: the section it shows
(templatetags/notifications_web.py) and the two forms it posts here. Each view parses its form,
calls one service and sends the browser back to the section (303), with a message saying what
happened or what was wrong."""

from __future__ import annotations

from typing import cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Account, User
from config.errors import DomainError
from notifications.forms import AutoRechargeForm, CardReturnForm, NotificationsForm
from notifications.services import preferences, recharge

SECTION = "notification-settings"
MESSAGE_TAG = "notifications"


def _back(request: HttpRequest, *, error: str = "", done: str = "") -> HttpResponse:
    """Back to the section (303), with a message saying what was wrong or what was done."""
    if error:
        messages.error(request, error, extra_tags=MESSAGE_TAG)
    if done:
        messages.success(request, done, extra_tags=MESSAGE_TAG)
    response = HttpResponseRedirect(f"{reverse('web-billing')}#{SECTION}")
    response.status_code = 303
    return response


def _form_errors(form: NotificationsForm | AutoRechargeForm) -> str:
    def label(name: str) -> str:
        field = form.fields.get(name)
        return f"{field.label or name}: " if field is not None else ""

    return " ".join(f"{label(name)}{' '.join(map(str, errors))}" for name, errors in form.errors.items())


def _account(request: HttpRequest) -> Account | None:
    return Account.objects.filter(user=cast(User, request.user)).first()


@require_POST
@login_required
def notifications_save(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    form = NotificationsForm(request.POST)
    if account is None:
        return _back(request)
    if not form.is_valid():
        return _back(request, error=_form_errors(form))
    preferences.preferences_update(
        account=account,
        low_balance_threshold=form.cleaned_data["low_balance_threshold"],
        emails=form.email_switches(),
    )
    return _back(request, done="Notification settings saved.")


@require_POST
@login_required
def auto_recharge_save(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    form = AutoRechargeForm(request.POST)
    if account is None:
        return _back(request)
    if not form.is_valid():
        return _back(request, error=_form_errors(form))
    try:
        recharge.auto_recharge_configure(
            account=account,
            pack=form.cleaned_data["pack"],
            threshold_credits=form.cleaned_data["threshold_credits"],
            monthly_cap_cents=form.monthly_cap_cents(),
            enabled=form.cleaned_data["enabled"],
        )
    except DomainError as exc:
        return _back(request, error=exc.message)
    return _back(request, done="Auto-recharge settings saved.")


@require_POST
@login_required
def card_checkout(request: HttpRequest) -> HttpResponse:
    """Send the browser to a setup-mode Checkout Session to save a card (303)."""
    account = _account(request)
    if account is None:
        return _back(request)
    returned = request.build_absolute_uri(reverse("web-auto-recharge-card-saved"))
    try:
        url = recharge.card_checkout_start(
            account=account,
            success_url=f"{returned}?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=request.build_absolute_uri(f"{reverse('web-billing')}#{SECTION}"),
        )
    except DomainError as exc:
        return _back(request, error=exc.message)
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@require_GET
@login_required
def card_saved(request: HttpRequest) -> HttpResponse:
    """Where Checkout returns the browser: store the card the session saved."""
    account = _account(request)
    form = CardReturnForm(request.GET)
    if account is None:
        return _back(request)
    if not form.is_valid():
        return _back(request, error="That link is not a card-saving return from Stripe.")
    try:
        saved = recharge.card_save_from_checkout(account=account, session_id=form.cleaned_data["session_id"])
    except DomainError as exc:
        return _back(request, error=exc.message)
    return _back(request, done=f"Card saved: {saved.card_brand.title()} ending {saved.card_last4}.")
