"""Routes for packs, purchases and the Stripe webhook: parse, call one service, render."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsEndUser, end_user_account
from billing.api import parse
from billing.errors import BillingError
from billing.models import Purchase
from billing.purchase_serializers import (
    CheckoutOut,
    PackListOut,
    PaymentIntentOut,
    PurchaseListOut,
    PurchaseRequest,
)
from billing.schema import BUY_ERRORS, PUBLIC_READ_ERRORS, USER_READ_ERRORS
from billing.selectors import packs_active, purchases_of
from billing.services.purchases import pack_get, purchase_start
from billing.services.stripe_events import webhook_receive
from config.errors import error_body

PACK_DOC = (
    "`pack` is a pack's `id` from GET /packs (its slug, e.g. `credits-115`); `quantity` 1-20, default 1. "
    "Suspended accounts get 403 account_suspended. Credits are granted once Stripe reports the payment "
    "(webhook or reconciliation); they expire 12 calendar months after payment."
)


class PackListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses={200: PackListOut, **PUBLIC_READ_ERRORS},
        tags=["packs"],
        description="The credit packs on sale, cheapest first. Anyone may read it.",
    )
    def get(self, request: Request) -> Response:
        return Response(PackListOut({"data": packs_active()}).data)


def _start(request: Request, flow: str) -> tuple[Purchase, dict]:
    data = parse(PurchaseRequest, request.data)
    pack = pack_get(pack=data["pack"])
    return purchase_start(account=end_user_account(request), pack=pack, quantity=data["quantity"], flow=flow)


class CheckoutView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        request=PurchaseRequest, responses={201: CheckoutOut, **BUY_ERRORS}, tags=["purchases"], description=PACK_DOC
    )
    def post(self, request: Request) -> Response:
        # No Idempotency-Key and no request-wide transaction: this moves no credits, and
        # Stripe is called outside any transaction. A repeated click makes a second pending
        # purchase that expires unpaid.
        purchase, session = _start(request, Purchase.Flow.CHECKOUT)
        body = {"id": session["id"], "url": session["url"], "purchase": purchase.public_id}
        return Response(CheckoutOut(body).data, status=status.HTTP_201_CREATED)


class PaymentIntentView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        request=PurchaseRequest,
        responses={201: PaymentIntentOut, **BUY_ERRORS},
        tags=["purchases"],
        description=PACK_DOC,
    )
    def post(self, request: Request) -> Response:
        purchase, intent = _start(request, Purchase.Flow.PAYMENT_INTENT)
        body = {"id": intent["id"], "client_secret": intent["client_secret"], "purchase": purchase.public_id}
        return Response(PaymentIntentOut(body).data, status=status.HTTP_201_CREATED)


class MePurchasesView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        responses={200: PurchaseListOut, **USER_READ_ERRORS},
        tags=["me"],
        description="The caller's purchases (`pur_...`), newest first, with their status.",
    )
    def get(self, request: Request) -> Response:
        return Response(PurchaseListOut({"data": purchases_of(account=end_user_account(request))}).data)


@csrf_exempt
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    """Stripe's signed events. Not an API route: the signature is the only credential, there
    is no rate limit (Stripe sends in bursts), and no request-wide transaction."""
    if request.method != "POST":
        return JsonResponse(error_body("method_not_allowed", "Use POST."), status=405)
    try:
        receipt = webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
    except BillingError as exc:
        return JsonResponse(error_body(exc.code, exc.message, **exc.details), status=exc.status_code)
    return JsonResponse({"received": True, "event": receipt.event_id, "status": receipt.status})
