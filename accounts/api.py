"""Routes for end users' credentials: get a personal token. (Signup and /me show credits, so they
are billing's: billing/me_api.py.)"""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError

from .schema import TOKEN_ERRORS
from .serializers import TokenOut, TokenRequest
from .services import user_token_create


class TokenView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=TokenRequest,
        responses={200: TokenOut, **TOKEN_ERRORS},
        tags=["auth"],
        description="A personal token for the /me routes (`Authorization: Bearer <token>`), shown once.",
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request._request, username=data["email"].strip().lower(), password=data["password"])
        if user is None or not user.is_active:
            raise ApiError(401, "authentication_failed", "Email or password is wrong.")
        _, raw = user_token_create(user=user)
        return Response({"token": raw})
