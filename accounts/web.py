"""End-user HTML pages for accounts: log in, log out (Django session auth, CSRF on). The signup
page opens an account with free credits, so it is billing's (billing/web.py)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views

from .forms import EmailLoginForm

login_page = auth_views.LoginView.as_view(
    template_name="accounts/login.html", authentication_form=EmailLoginForm, redirect_authenticated_user=True
)
# POST only (Django 5): a link or a prefetch cannot log anyone out.
logout_page = auth_views.LogoutView.as_view()
