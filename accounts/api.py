"""Routes for end users' credentials: get a personal token, revoke it. (Signup and /me show credits, so they
are billing's: billing/me_api.py.)"""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError

from .authentication import BearerAuthentication
from .models import UserToken
from .schema import TOKEN_ERRORS, errors
from .serializers import TokenOut, TokenRequest
from .services import user_token_create, user_token_revoke

TOKEN_REVOKE_ERRORS = errors("authentication_failed", "permission_denied")


class TokenView(APIView):
    permission_classes = [AllowAny]

    def get_authenticators(self) -> list[BaseAuthentication]:
        # Getting a token takes the password alone; ending one takes the token itself.
        request = getattr(self, "request", None)
        return [BearerAuthentication()] if request is not None and request.method == "DELETE" else []

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
        # A login like the web's: last_login is set and django-axes clears the failures counted.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        return Response({"token": raw})

    @extend_schema(
        request=None,
        responses={204: None, **TOKEN_REVOKE_ERRORS},
        tags=["auth"],
        description="Revoke the personal token this request is made with: it is refused from then on. Tokens also "
        "expire USER_TOKEN_LIFETIME_DAYS (30 unless configured) days after they are made.",
    )
    def delete(self, request: Request) -> Response:
        if not isinstance(request.auth, UserToken):
            if request.user is None:
                raise ApiError(401, "authentication_failed", "Send the personal token to revoke as a Bearer token.")
            raise ApiError(403, "permission_denied", "Only a personal token can be revoked this way.")
        user_token_revoke(token=request.auth)
        return Response(status=204)
