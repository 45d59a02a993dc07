"""End users' routes that show credits: sign up (the answer carries the new balance), read their
own account and ledger. Parse, call one service, render."""

from __future__ import annotations

import json
from typing import Any, cast

from django.db import IntegrityError
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.permissions import IsEndUser, end_user_account
from accounts.serializers import SignupRequest, UserOut
from billing.api import ledger_response, parse
from billing.schema import LEDGER_PARAMETERS, SIGNUP_ERRORS, USER_LEDGER_ERRORS, USER_READ_ERRORS
from billing.selectors import balance_json
from billing.serializers import BalanceOut, LedgerPageOut
from billing.services.ledger import Actor, account_settle
from billing.signup import user_signup
from config.errors import ApiError


class MeOut(serializers.Serializer):
    user = UserOut()
    account = serializers.CharField()
    balance = BalanceOut()


def me_data(user: User) -> dict[str, Any]:
    """MeOut's body: the balance as the engine renders it (billing.selectors.balance_json), after
    settling the account, so a new period's free credits are granted on first read."""
    account = user.account
    now = timezone.now()
    account_settle(account=account, actor=Actor.system("balance_read"), now=now)
    balance = balance_json(account.public_id, now)
    assert balance is not None, "a settled account's balance reads"
    return {"user": UserOut(user).data, "account": account.public_id, "balance": json.loads(balance)}


class SignupView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=SignupRequest,
        responses={201: MeOut, **SIGNUP_ERRORS},
        tags=["auth"],
        description=(
            "Open an account: the user (`usr_...`), its account (`acct_...`) and balance. The first free "
            "credits are granted once the email is verified (the link signup emails), at once when "
            "verification is off. While the waitlist is on, `invitation` must be a usable invitation."
        ),
    )
    def post(self, request: Request) -> Response:
        data = parse(SignupRequest, request.data)
        try:
            user = user_signup(email=data["email"], password=data["password"], invitation=data.get("invitation", ""))
        except IntegrityError:
            # Two signups raced past the uniqueness check; the database kept one.
            taken = "An account with this email already exists."
            raise ApiError(400, "validation_error", f"email: {taken}", fields={"email": [taken]}) from None
        return Response(me_data(user), status=status.HTTP_201_CREATED)


class MeView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        responses={200: MeOut, **USER_READ_ERRORS},
        tags=["me"],
        description="The caller's user, account id and balance (a new period's free credits are granted first).",
    )
    def get(self, request: Request) -> Response:
        return Response(me_data(cast(User, request.user)))


class MeLedgerView(APIView):
    permission_classes = [IsEndUser]

    @extend_schema(
        parameters=LEDGER_PARAMETERS,
        responses={200: LedgerPageOut, **USER_LEDGER_ERRORS},
        tags=["me"],
        description="The caller's own ledger entries, newest first, paged as the service ledger is.",
    )
    def get(self, request: Request) -> Response:
        return ledger_response(request, end_user_account(request))
