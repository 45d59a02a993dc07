"""HTML forms of the end-user pages: sign up and log in. Every input is checked here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.password_validation import validate_password

from .models import User

PASSWORD_MIN_LENGTH = 8  # as POST /api/v1/auth/signup
PASSWORD_MAX_LENGTH = 128


class PlainLabels:
    """Labels read "Email", not "Email:": a screen reader speaks the field's name, nothing more."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]


class SignupForm(PlainLabels, forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        help_text=f"At least {PASSWORD_MIN_LENGTH} characters.",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password_again = forms.CharField(
        label="Password again",
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    # The token of the invitation link (?invitation=...), needed while the waitlist is on; its
    # validity is decided when it is used (waitlist.services.invitation_redeem).
    invitation = forms.CharField(required=False, max_length=200, label="", widget=forms.HiddenInput)

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        # A friendly early answer; the unique constraint decides a race (the view handles it).
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        password, again = data.get("password"), data.get("password_again")
        if password and again is not None and password != again:
            self.add_error("password_again", "The two passwords differ.")
        elif password and data.get("email"):
            try:
                validate_password(password, User(email=data["email"]))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class EmailLoginForm(PlainLabels, AuthenticationForm):
    """Django's login form; emails are stored lower-cased, so they are compared that way."""

    def clean_username(self) -> str:
        return (self.cleaned_data.get("username") or "").strip().lower()
