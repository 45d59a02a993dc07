"""The forms of the operators' actions. Each asks for a reason; the services refuse without one
as well."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone

from accounts.models import Account
from billing.models import Grant
from billing.services.ledger import MAX_GRANT_CREDITS


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Required; kept in the audit trail with your name.",
    )


class GrantForm(ReasonForm):
    credits = forms.IntegerField(min_value=1, max_value=MAX_GRANT_CREDITS)
    expires_at = forms.DateTimeField(
        required=False, help_text="UTC, e.g. 2027-01-31 00:00. Empty: the credits never expire."
    )
    priority = forms.IntegerField(
        required=False, min_value=-1000, max_value=1000, help_text="Among lots expiring together, lower goes first."
    )
    field_order = ["credits", "expires_at", "priority", "reason"]

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return expires_at


class LotChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"grant {obj.pk}: {obj.source}, {obj.remaining} of {obj.amount} left"


class ClawbackForm(ReasonForm):
    grant = LotChoiceField(queryset=Grant.objects.none(), help_text="A lot with credits left.")
    credits = forms.IntegerField(min_value=1, max_value=MAX_GRANT_CREDITS, help_text="At most what the lot has left.")
    field_order = ["grant", "credits", "reason"]

    def __init__(self, *args: Any, account: Account, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["grant"]
        assert isinstance(field, LotChoiceField)
        field.queryset = Grant.objects.filter(account=account, spendable=True).order_by("id")


class RefundForm(ReasonForm):
    amount_cents = forms.IntegerField(
        required=False, min_value=1, help_text="Empty: refund all that is left. Otherwise a partial refund, in cents."
    )
    field_order = ["amount_cents", "reason"]


class ServiceKeyCreateForm(ReasonForm):
    name = forms.CharField(max_length=100, help_text="Which service uses it.")
    field_order = ["name", "reason"]
