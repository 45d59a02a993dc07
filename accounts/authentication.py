"""Who is calling: a service key, an end user's token, or an end user's session."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

from .models import ServiceKey, User, UserToken
from .services import hash_key, touch_last_used


@dataclass(frozen=True)
class ServicePrincipal:
    """The request.user of a call made with a service key."""

    key_id: int
    name: str
    is_authenticated: bool = True
    is_service: bool = True

    @property
    def scope(self) -> str:
        return f"svc:{self.key_id}"


def principal_scope(user: object) -> str:
    if isinstance(user, ServicePrincipal):
        return user.scope
    return f"user:{getattr(user, 'pk', '')}"


class BearerAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <key>'.")
        raw = parts[1]
        if len(raw) > 200 or not raw.isascii():
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if raw.startswith("sk_"):
            return self._service(raw, now)
        return self._user_token(raw, now)

    def _service(self, raw: str, now):  # type: ignore[no-untyped-def]
        key = ServiceKey.objects.filter(key_hash=hash_key(raw), revoked_at__isnull=True).only("id", "name").first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        touch_last_used(ServiceKey, key.pk, now)
        return ServicePrincipal(key_id=key.pk, name=key.name), key

    def _user_token(self, raw: str, now):  # type: ignore[no-untyped-def]
        token = UserToken.objects.filter(key_hash=hash_key(raw), revoked_at__isnull=True).select_related("user").first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        touch_last_used(UserToken, token.pk, now)
        return token.user, token

    def authenticate_header(self, request) -> str:  # type: ignore[no-untyped-def]
        return self.keyword


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """Django session login for the web pages; CSRF is enforced as DRF does."""


def is_service(user: object) -> bool:
    return isinstance(user, ServicePrincipal)


def is_end_user(user: object) -> bool:
    return isinstance(user, User) and user.is_active
