"""The safety system's routes: the generation service suspends and reactivates accounts (its
automated content-policy detection), recorded in the operators' audit trail with the key as the
actor. Each takes an Idempotency-Key: the key is recorded with the answer in the transaction that
changes the status, and a retry replays that answer (billing/idempotency.py)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ServicePrincipal
from accounts.models import Account
from accounts.permissions import IsService
from accounts.schema import SIGNED_IN
from accounts.serializers import StrictCharField, StrictSerializer
from billing.idempotency import KeyTaken, keys_store_many, keys_stored, replay, request_key
from billing.schema import CREDIT_MOVING, IDEMPOTENCY_HEADER, errors
from config.errors import ApiError

from .services import Operator, account_status_change


class StatusChangeRequest(StrictSerializer):
    reason = StrictCharField(max_length=2000)


class AccountStatusOut(serializers.Serializer):
    account = serializers.CharField(help_text="acct_...")
    status = serializers.ChoiceField(choices=Account.Status.choices)
    status_reason = serializers.CharField()


# Every status the routes answer, with its codes (billing/schema.py's catalogue).
ERRORS = errors(*SIGNED_IN, *CREDIT_MOVING, "not_found")


def account_status_json(account: Account) -> dict[str, str]:
    return {"account": account.public_id, "status": account.status, "status_reason": account.status_reason}


class AccountStatusView(APIView):
    permission_classes = [IsService]
    suspend = True

    def post(self, request: Request, account_id: str) -> Response:
        scope, key, request_hash = request_key(request)
        serializer = StatusChangeRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        if keys_stored(scope, [key]):
            return replay(scope, key, request_hash)
        account = Account.objects.filter(public_id=account_id).first()
        if account is None:
            raise ApiError(404, "not_found", "No such object.")
        principal = request.user
        assert isinstance(principal, ServicePrincipal)
        operator = Operator.service(principal.key_id, principal.name)
        try:
            with transaction.atomic():
                account, _ = account_status_change(
                    operator=operator, account=account, suspend=self.suspend, reason=serializer.validated_data["reason"]
                )
                body = account_status_json(account)
                # A concurrent request with the same key waits here for ours, then finds it taken.
                if not keys_store_many(scope, [(key, request_hash, 200, body)]):
                    raise KeyTaken()
        except KeyTaken:
            return replay(scope, key, request_hash)
        return Response(body)


class AccountSuspendView(AccountStatusView):
    @extend_schema(
        request=StatusChangeRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: AccountStatusOut, **ERRORS},
        tags=["accounts"],
        description="Suspend the account: its spends are refused (403 account_suspended) and it gets no "
        "free credits; pending holds stay capturable and releasable. Audited with the key as the actor.",
    )
    def post(self, request: Request, account_id: str) -> Response:
        return super().post(request, account_id)


class AccountReactivateView(AccountStatusView):
    suspend = False

    @extend_schema(
        request=StatusChangeRequest,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: AccountStatusOut, **ERRORS},
        tags=["accounts"],
        description="Let a suspended account spend again. Audited with the key as the actor.",
    )
    def post(self, request: Request, account_id: str) -> Response:
        return super().post(request, account_id)
