"""Service routes of the spend API: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ServicePrincipal
from accounts.models import Account
from accounts.permissions import IsService
from billing.errors import HoldExpired, UnknownOperation
from billing.idempotency import idempotent
from billing.models import ActorType, Debit, Hold
from billing.selectors import balance_get, ledger_page, operation_price
from billing.serializers import (
    BalanceOut,
    CaptureRequest,
    DebitOut,
    DebitRequest,
    EmptyRequest,
    ErrorOut,
    HoldOut,
    HoldRequest,
    LedgerPageOut,
    LedgerQuery,
    balance_data,
    encode_cursor,
)
from billing.services.ledger import (
    Actor,
    account_settle,
    debit_create,
    debit_refund,
    hold_capture,
    hold_create,
    hold_release,
    needs_settle,
)
from config.errors import ApiError, billing_error_response


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    described = {
        400: "validation_error or idempotency_key_required",
        401: "authentication_failed",
        402: "insufficient_credits (with available and requested)",
        403: "permission_denied or account_suspended",
        404: "not_found",
        409: "idempotency_key_reused, hold_not_pending, hold_expired or debit_already_refunded",
        413: "request_too_large",
        429: "rate_limited (with Retry-After)",
    }
    return {code: OpenApiResponse(ErrorOut, description=described[code]) for code in codes}


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Unique per operation; a retry with the same key replays the first response.",
)
READ_ERRORS = _errors(401, 403, 404, 429)
WRITE_ERRORS = _errors(400, 401, 402, 403, 404, 409, 413, 429)


def actor_of(request: Request) -> Actor:
    principal = request.user
    assert isinstance(principal, ServicePrincipal)
    return Actor(ActorType.SERVICE, str(principal.key_id))


def get_or_404(queryset: Any, **lookup: Any) -> Any:
    found = queryset.filter(**lookup).first()
    if found is None:
        raise ApiError(404, "not_found", "No such object.")
    return found


def account_or_404(public_id: str) -> Account:
    return get_or_404(Account.objects.all(), public_id=public_id)


def spend_credits(data: dict[str, Any]) -> tuple[int, str]:
    """The credits a request spends, from its explicit amount or its operation's price."""
    if "credits" in data:
        return data["credits"], ""
    price = operation_price(data["operation"])
    if price is None:
        raise UnknownOperation(f"Unknown or inactive operation {data['operation']!r}.", field="operation")
    return price, data["operation"]


def parse(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ServiceView(APIView):
    permission_classes = [IsService]


class BalanceView(ServiceView):
    @extend_schema(responses={200: BalanceOut, **READ_ERRORS}, tags=["balance"])
    def get(self, request: Request, account_id: str) -> Response:
        account = account_or_404(account_id)
        now = timezone.now()
        if needs_settle(account, now):
            account = account_settle(account=account, actor=Actor.system("balance_read"), now=now)
        return Response(balance_data(balance_get(account=account, now=now)))


class DebitCreateView(ServiceView):
    @extend_schema(
        request=DebitRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: DebitOut, **WRITE_ERRORS},
        tags=["debits"],
    )
    def post(self, request: Request, account_id: str) -> Response:
        def handle() -> Response:
            data = parse(DebitRequest, request.data)
            account = account_or_404(account_id)
            credits, operation = spend_credits(data)
            debit = debit_create(
                account=account,
                credits=credits,
                operation=operation,
                reference=data["reference"],
                metadata=data.get("metadata"),
                actor=actor_of(request),
            )
            return Response(DebitOut(debit).data, status=status.HTTP_201_CREATED)

        return idempotent(request, handle)


class DebitRefundView(ServiceView):
    @extend_schema(
        request=EmptyRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: DebitOut, **WRITE_ERRORS},
        tags=["debits"],
    )
    def post(self, request: Request, debit_id: str) -> Response:
        def handle() -> Response:
            parse(EmptyRequest, request.data)
            debit = get_or_404(Debit.objects.select_related("account"), public_id=debit_id)
            debit = debit_refund(debit=debit, actor=actor_of(request))
            debit.account.refresh_from_db(fields=["available_credits", "held_credits"])
            return Response(DebitOut(debit).data)

        return idempotent(request, handle)


class HoldCreateView(ServiceView):
    @extend_schema(
        request=HoldRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: HoldOut, **WRITE_ERRORS},
        tags=["holds"],
    )
    def post(self, request: Request, account_id: str) -> Response:
        def handle() -> Response:
            data = parse(HoldRequest, request.data)
            account = account_or_404(account_id)
            credits, operation = spend_credits(data)
            hold = hold_create(
                account=account,
                credits=credits,
                operation=operation,
                reference=data["reference"],
                expires_in=data["expires_in"],
                actor=actor_of(request),
            )
            return Response(HoldOut(hold).data, status=status.HTTP_201_CREATED)

        return idempotent(request, handle)


class HoldDetailView(ServiceView):
    @extend_schema(responses={200: HoldOut, **READ_ERRORS}, tags=["holds"])
    def get(self, request: Request, hold_id: str) -> Response:
        hold = get_or_404(Hold.objects.select_related("account"), public_id=hold_id)
        if hold.status == Hold.Status.PENDING and hold.expires_at <= timezone.now():
            # The automatic release is due: do it now rather than show a stale `pending`.
            account_settle(account=hold.account, actor=Actor.system("hold_timeouts"))
            hold.refresh_from_db()
        return Response(HoldOut(hold).data)


class HoldCaptureView(ServiceView):
    @extend_schema(
        request=CaptureRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: HoldOut, **WRITE_ERRORS},
        tags=["holds"],
    )
    def post(self, request: Request, hold_id: str) -> Response:
        def handle() -> Response:
            data = parse(CaptureRequest, request.data)
            hold = get_or_404(Hold.objects.select_related("account"), public_id=hold_id)
            hold = hold_capture(hold=hold, credits=data.get("credits"), actor=actor_of(request))
            if hold.status == Hold.Status.EXPIRED:
                # Returned, not raised: the release that came with the refusal must commit.
                return billing_error_response(HoldExpired(hold=hold.public_id))
            return Response(HoldOut(hold).data)

        return idempotent(request, handle)


class HoldReleaseView(ServiceView):
    @extend_schema(
        request=EmptyRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: HoldOut, **WRITE_ERRORS},
        tags=["holds"],
    )
    def post(self, request: Request, hold_id: str) -> Response:
        def handle() -> Response:
            parse(EmptyRequest, request.data)
            hold = get_or_404(Hold.objects.select_related("account"), public_id=hold_id)
            hold = hold_release(hold=hold, actor=actor_of(request))
            return Response(HoldOut(hold).data)

        return idempotent(request, handle)


def ledger_response(request: Request, account: Account) -> Response:
    query = parse(LedgerQuery, request.query_params.dict())
    page, next_id = ledger_page(account=account, before_id=query.get("cursor"), limit=query["limit"])
    body = LedgerPageOut({"data": page, "next_cursor": encode_cursor(next_id) if next_id else None}).data
    return Response(body)


LEDGER_PARAMETERS = [
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
    OpenApiParameter("limit", int, description="1 to 200, default 50"),
]


class LedgerView(ServiceView):
    @extend_schema(
        parameters=LEDGER_PARAMETERS,
        responses={200: LedgerPageOut, **_errors(400, 401, 403, 404, 429)},
        tags=["ledger"],
    )
    def get(self, request: Request, account_id: str) -> Response:
        return ledger_response(request, account_or_404(account_id))
