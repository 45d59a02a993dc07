"""End-user HTML pages for accounts: sign up, log in, log out (Django session auth, CSRF on)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .forms import EmailLoginForm, SignupForm
from .services import user_signup

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"

login_page = auth_views.LoginView.as_view(
    template_name="accounts/login.html", authentication_form=EmailLoginForm, redirect_authenticated_user=True
)
# POST only (Django 5): a link or a prefetch cannot log anyone out.
logout_page = auth_views.LogoutView.as_view()


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            user = user_signup(email=form.cleaned_data["email"], password=form.cleaned_data["password"])
        except IntegrityError:
            # Two signups with one email raced past the form's check; the database kept one.
            form.add_error("email", "An account with this email already exists.")
        else:
            login(request, user, backend=MODEL_BACKEND)
            return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)
