"""The waitlist page's form."""

from __future__ import annotations

from django import forms


class JoinForm(forms.Form):
    email = forms.EmailField(max_length=254, label_suffix="", widget=forms.EmailInput(attrs={"autocomplete": "email"}))
