"""{% notification_settings account %}: the billing page's settings section."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.utils import timezone

from accounts.models import Account
from billing.services import stripe_gateway
from notifications.forms import EMAIL_LABELS, AutoRechargeForm, NotificationsForm, email_field_name
from notifications.services import preferences, recharge

register = template.Library()


@register.inclusion_tag("notifications/_settings.html", takes_context=True)
def notification_settings(context: Any, account: Account) -> dict[str, Any]:
    prefs = preferences.preferences_get(account=account)
    switches = preferences.emails_enabled(prefs)
    auto = recharge.auto_recharge_get(account=account)
    notifications_form = NotificationsForm(
        initial={
            "low_balance_threshold": prefs.low_balance_threshold_credits,
            **{email_field_name(kind): on for kind, on in switches.items()},
        }
    )
    auto_form = AutoRechargeForm(
        initial={
            "enabled": auto.enabled,
            "pack": auto.pack.slug if auto.pack is not None else None,
            "threshold_credits": auto.threshold_credits,
            "monthly_cap_dollars": f"{auto.monthly_cap_cents / 100:.2f}" if auto.monthly_cap_cents else None,
        }
    )
    return {
        "request": context.get("request"),
        "messages": context.get("messages"),
        "notifications_form": notifications_form,
        "email_fields": [notifications_form[email_field_name(kind)] for kind in EMAIL_LABELS],
        "default_threshold": settings.LOW_BALANCE_THRESHOLD_CREDITS,
        "effective_threshold": preferences.effective_threshold(account=account),
        "auto": auto,
        "auto_form": auto_form,
        "spent_cents": recharge.spent_this_month_cents(account_id=account.pk, now=timezone.now()),
        "csrf_token": context.get("csrf_token"),
        "payments_enabled": stripe_gateway.payments_enabled(),
    }
