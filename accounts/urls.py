"""Accounts' routes, served by config/urls.py: `api_v1` under /api/v1/, `web_pages` at the site's
root."""

from __future__ import annotations

from django.urls import path

from . import api, web

api_v1 = [
    path("auth/token", api.TokenView.as_view(), name="token"),
]

# End users' HTML pages (session login, CSRF on).
web_pages = [
    path("login", web.login_page, name="web-login"),
    path("logout", web.logout_page, name="web-logout"),
]
