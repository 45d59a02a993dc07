"""Routes of notifications: webhook endpoints (service keys), and the end user's notification
preferences and auto-recharge. Parse, call one service, render."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import is_service
from accounts.models import Account
from accounts.permissions import IsEndUser, IsService, end_user_account
from accounts.schema import SIGNED_IN, WITH_BODY
from billing.api import parse
from billing.schema import errors
from billing.services.purchases import pack_get
from notifications.models import WebhookEndpoint
from notifications.serializers import (
    AutoRechargeOut,
    AutoRechargeRequest,
    CardRequest,
    NotificationsOut,
    NotificationsRequest,
    SetupIntentOut,
    WebhookEndpointCreatedOut,
    WebhookEndpointListOut,
    WebhookEndpointRequest,
    auto_recharge_body,
)
from notifications.services import preferences, recharge, webhooks

STRIPE_CODES = ("payment_provider_error", "payments_unavailable")


# --- Webhook endpoints (service keys) -----------------------------------------------------------


class WebhookEndpointsView(APIView):
    permission_classes = [IsService]

    @extend_schema(
        responses={200: WebhookEndpointListOut, **errors(*SIGNED_IN)},
        tags=["webhooks"],
        description="The webhook endpoints that receive events, oldest first (their secrets are not shown).",
    )
    def get(self, request: Request) -> Response:
        live = WebhookEndpoint.objects.filter(deleted_at__isnull=True).order_by("id")
        return Response(WebhookEndpointListOut({"data": live}).data)

    @extend_schema(
        request=WebhookEndpointRequest,
        responses={201: WebhookEndpointCreatedOut, **errors(*SIGNED_IN, *WITH_BODY)},
        tags=["webhooks"],
        description=(
            "Each event is POSTed as JSON with `Webhook-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
            "'<t>.<body>' keyed with the secret>` (Stripe's scheme) and `Webhook-Id: evt_...`. Answer 2xx "
            "within 10 s; anything else is retried with exponential backoff for 3 days. The secret is in "
            "this answer only."
        ),
    )
    def post(self, request: Request) -> Response:
        data = parse(WebhookEndpointRequest, request.data)
        principal = request.user
        endpoint, secret = webhooks.endpoint_create(
            url=data["url"],
            description=data["description"],
            event_types=data["event_types"],
            created_by=principal.name if is_service(principal) else "",
        )
        body = {**WebhookEndpointCreatedOut(endpoint).to_representation(endpoint), "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookEndpointView(APIView):
    permission_classes = [IsService]

    @extend_schema(
        responses={204: None, **errors(*SIGNED_IN, "not_found")},
        tags=["webhooks"],
        description="Stop sending events to this endpoint; its deliveries and their log stay for operators.",
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        webhooks.endpoint_delete(public_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- The end user's preferences -----------------------------------------------------------------


def notifications_body(account: Account) -> dict[str, Any]:
    prefs = preferences.preferences_get(account=account)
    return {
        "low_balance_threshold": prefs.low_balance_threshold_credits,
        "effective_low_balance_threshold": preferences.effective_threshold(account=account),
        "default_low_balance_threshold": settings.LOW_BALANCE_THRESHOLD_CREDITS,
        "emails": preferences.emails_enabled(prefs),
    }


class MeNotificationsView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        responses={200: NotificationsOut, **errors(*SIGNED_IN)},
        tags=["me"],
        description="Your low-balance threshold (yours, the one in effect, the default) and each email's switch.",
    )
    def get(self, request: Request) -> Response:
        return Response(notifications_body(end_user_account(request)))

    @extend_schema(
        request=NotificationsRequest,
        responses={200: NotificationsOut, **errors(*SIGNED_IN, *WITH_BODY)},
        tags=["me"],
        description="Changes only what is given: `low_balance_threshold` (null: the default) and `emails` switches.",
    )
    def put(self, request: Request) -> Response:
        data = parse(NotificationsRequest, request.data)
        account = end_user_account(request)
        preferences.preferences_update(
            account=account,
            low_balance_threshold=data["low_balance_threshold"] if "low_balance_threshold" in data else ...,
            emails=data.get("emails"),
        )
        return Response(notifications_body(account))


# --- Auto-recharge ------------------------------------------------------------------------------


def auto_recharge_response(account: Account, code: int = status.HTTP_200_OK) -> Response:
    row = recharge.auto_recharge_get(account=account)
    spent = recharge.spent_this_month_cents(account_id=account.pk, now=timezone.now())
    return Response(AutoRechargeOut(auto_recharge_body(row, spent)).data, status=code)


class MeAutoRechargeView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        responses={200: AutoRechargeOut, **errors(*SIGNED_IN)},
        tags=["me"],
        description="Your auto-recharge: on or off, its pack, threshold and monthly cap, and the saved card.",
    )
    def get(self, request: Request) -> Response:
        return auto_recharge_response(end_user_account(request))

    @extend_schema(
        request=AutoRechargeRequest,
        responses={200: AutoRechargeOut, **errors(*SIGNED_IN, *WITH_BODY)},
        tags=["me"],
        description=(
            "When a spend leaves available credits below `threshold_credits`, enough packs to get back to it "
            "are bought in one off-session charge of the saved card, within `monthly_cap_cents` a calendar "
            "month (UTC). Enabling needs a saved card (POST /me/auto-recharge/setup-intent, then /card)."
        ),
    )
    def put(self, request: Request) -> Response:
        data = parse(AutoRechargeRequest, request.data)
        account = end_user_account(request)
        recharge.auto_recharge_configure(
            account=account,
            pack=pack_get(pack=data["pack"]),
            threshold_credits=data["threshold_credits"],
            monthly_cap_cents=data["monthly_cap_cents"],
            enabled=data["enabled"],
        )
        return auto_recharge_response(account)

    @extend_schema(
        responses={200: AutoRechargeOut, **errors(*SIGNED_IN)},
        tags=["me"],
        description="Switch auto-recharge off (the settings and the card are kept).",
    )
    def delete(self, request: Request) -> Response:
        account = end_user_account(request)
        recharge.auto_recharge_disable(account=account, reason="switched off by the user")
        return auto_recharge_response(account)


class MeSetupIntentView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        request=None,
        responses={201: SetupIntentOut, **errors(*SIGNED_IN, *STRIPE_CODES)},
        tags=["me"],
        description="Start saving a card: a Stripe SetupIntent for Stripe.js to confirm in the browser.",
    )
    def post(self, request: Request) -> Response:
        intent = recharge.card_setup_start(account=end_user_account(request))
        body = {"id": intent["id"], "client_secret": intent["client_secret"]}
        return Response(SetupIntentOut(body).data, status=status.HTTP_201_CREATED)


class MeCardView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        request=CardRequest,
        responses={200: AutoRechargeOut, **errors(*SIGNED_IN, *WITH_BODY, *STRIPE_CODES)},
        tags=["me"],
        description="Save the card of a SetupIntent the browser confirmed (Stripe.js confirmCardSetup).",
    )
    def post(self, request: Request) -> Response:
        data = parse(CardRequest, request.data)
        account = end_user_account(request)
        recharge.card_save(account=account, setup_intent_id=data["setup_intent"])
        return auto_recharge_response(account)
