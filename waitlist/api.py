"""POST /api/v1/waitlist: join the waitlist. Parse, call one service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.schema import WITH_BODY
from accounts.serializers import StrictEmailField, StrictSerializer
from billing.schema import errors

from .models import WaitlistEntry
from .services import waitlist_join
from .throttling import WaitlistThrottle


class WaitlistJoinRequest(StrictSerializer):
    email = StrictEmailField(max_length=254)


class WaitlistEntryOut(serializers.Serializer):
    email = serializers.EmailField()
    status = serializers.ChoiceField(
        choices=["waiting", "invited"], help_text="invited: an invitation to sign up was emailed."
    )
    joined_at = serializers.DateTimeField()


def entry_data(entry: WaitlistEntry) -> dict[str, Any]:
    # An entry an operator skipped is still waiting, as far as its owner can tell.
    shown = "invited" if entry.status == WaitlistEntry.Status.INVITED else "waiting"
    return {"email": entry.email, "status": shown, "joined_at": entry.joined_at}


class WaitlistJoinView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [WaitlistThrottle]

    @extend_schema(
        request=WaitlistJoinRequest,
        responses={201: WaitlistEntryOut, 200: WaitlistEntryOut, **errors(*WITH_BODY)},
        tags=["waitlist"],
        description="Join the waitlist: 201 for a new entry, 200 with the entry for an email already on it. "
        "Limited per client address (429 rate_limited).",
    )
    def post(self, request: Request) -> Response:
        serializer = WaitlistJoinRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry, created = waitlist_join(email=serializer.validated_data["email"])
        body = WaitlistEntryOut(entry_data(entry)).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
