"""The console's routes, served by config/urls.py: `api_v1` under /api/v1/. Its admin pages are
the ModelAdmins' own (console/admin/)."""

from __future__ import annotations

from django.urls import path

import billing.urls  # noqa: F401 - registers the `pubid` converter these routes use

from . import api

api_v1 = [
    path("accounts/<pubid:account_id>/suspend", api.AccountSuspendView.as_view(), name="account-suspend"),
    path("accounts/<pubid:account_id>/reactivate", api.AccountReactivateView.as_view(), name="account-reactivate"),
]
