"""The waitlist's routes, served by config/urls.py: `api_v1` under /api/v1/, `web_pages` at the
site's root."""

from __future__ import annotations

from django.urls import path

from . import api, web

api_v1 = [
    path("waitlist", api.WaitlistJoinView.as_view(), name="waitlist-join"),
]

web_pages = [
    path("waitlist", web.waitlist_page, name="web-waitlist"),
]
