"""HTML forms and query parameters of the billing pages. Every input is checked here."""

from __future__ import annotations

from django import forms

from billing.errors import UnknownPack
from billing.models import CreditPack
from billing.serializers import decode_cursor
from billing.services.purchases import pack_get


class BuyForm(forms.Form):
    """The buy button: which active pack (by slug), always one of it."""

    pack = forms.CharField(max_length=50)

    def clean_pack(self) -> CreditPack:
        try:
            return pack_get(pack=self.cleaned_data["pack"])
        except UnknownPack:
            raise forms.ValidationError("This credit pack is not on sale.") from None


class HistoryQuery(forms.Form):
    """?before=<cursor>: the history page that continues below an entry (the opaque cursor the
    API's ledger pages use: billing.serializers.encode_cursor)."""

    before = forms.CharField(required=False, max_length=64)

    def clean_before(self) -> int | None:
        cursor = self.cleaned_data["before"]
        if not cursor:
            return None
        entry_id = decode_cursor(cursor)
        if entry_id is None:
            raise forms.ValidationError("That history link is not valid.")
        return entry_id


class PurchaseQuery(forms.Form):
    """?purchase=pur_...: the purchase Checkout sent the buyer back for."""

    purchase = forms.RegexField(regex=r"^pur_[A-Za-z0-9]{1,40}$", max_length=44)
