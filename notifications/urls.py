"""Notifications' routes, served by config/urls.py under /api/v1/ (`api_v1`) and at the site's
root (`web_pages`)."""

from __future__ import annotations

from django.urls import path

import config.converters  # noqa: F401 (registers "pubid": public ids in paths, anything else a 404)

from . import api, web

api_v1 = [
    path("webhook-endpoints", api.WebhookEndpointsView.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<pubid:endpoint_id>", api.WebhookEndpointView.as_view(), name="webhook-endpoint"),
    path("me/notifications", api.MeNotificationsView.as_view(), name="me-notifications"),
    path("me/auto-recharge", api.MeAutoRechargeView.as_view(), name="me-auto-recharge"),
    path("me/auto-recharge/setup-intent", api.MeSetupIntentView.as_view(), name="me-auto-recharge-setup-intent"),
    path("me/auto-recharge/card", api.MeCardView.as_view(), name="me-auto-recharge-card"),
]

web_pages = [
    path("billing/notifications", web.notifications_save, name="web-notifications"),
    path("billing/auto-recharge", web.auto_recharge_save, name="web-auto-recharge"),
    path("billing/auto-recharge/card", web.card_checkout, name="web-auto-recharge-card"),
    path("billing/auto-recharge/card-saved", web.card_saved, name="web-auto-recharge-card-saved"),
]
