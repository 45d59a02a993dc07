"""Forms of the billing page's notification and auto-recharge settings."""

from __future__ import annotations

from django import forms
from django.template.defaultfilters import pluralize

from billing.models import CreditPack
from billing.money import format_price
from notifications.services.preferences import EMAIL_KINDS, MAX_THRESHOLD_CREDITS
from notifications.services.recharge import MAX_MONTHLY_CAP_CENTS
from notifications.services.recharge import MAX_THRESHOLD_CREDITS as MAX_RECHARGE_THRESHOLD

EMAIL_LABELS = {
    "balance.low": "My credits run low",
    "credits.expiring": "Credits I bought are about to expire",
    "purchase.paid": "A purchase is paid",
    "purchase.refunded": "A purchase is refunded",
    "auto_recharge.succeeded": "Auto-recharge bought credits",
    "auto_recharge.failed": "Auto-recharge failed",
    "account.suspended": "My account is suspended",
}


def email_field_name(kind: str) -> str:
    return "email_" + kind.replace(".", "_")


class NotificationsForm(forms.Form):
    low_balance_threshold = forms.IntegerField(
        min_value=0,
        max_value=MAX_THRESHOLD_CREDITS,
        required=False,
        label="Warn me when my credits fall below",
        help_text="Leave empty for the default.",
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for kind in EMAIL_KINDS:
            self.fields[email_field_name(kind)] = forms.BooleanField(required=False, label=EMAIL_LABELS[kind])

    def email_switches(self) -> dict[str, bool]:
        return {kind: bool(self.cleaned_data.get(email_field_name(kind))) for kind in EMAIL_KINDS}


class PackChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: CreditPack) -> str:  # type: ignore[override]
        price = format_price(amount_cents=obj.price_cents, currency=obj.currency)
        return f"{obj.credits} credit{pluralize(obj.credits)} for {price}"


class AutoRechargeForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Recharge automatically")
    pack = PackChoiceField(
        queryset=CreditPack.objects.filter(active=True).order_by("price_cents"), to_field_name="slug", empty_label=None
    )
    threshold_credits = forms.IntegerField(
        min_value=1, max_value=MAX_RECHARGE_THRESHOLD, label="When credits fall below"
    )
    monthly_cap_dollars = forms.DecimalField(
        min_value=0, max_value=MAX_MONTHLY_CAP_CENTS // 100, decimal_places=2, label="Spend at most a month (USD)"
    )

    def monthly_cap_cents(self) -> int:
        return int(self.cleaned_data["monthly_cap_dollars"] * 100)


class CardReturnForm(forms.Form):
    session_id = forms.RegexField(regex=r"^cs_[A-Za-z0-9_]{1,250}$")
