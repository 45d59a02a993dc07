from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from .authentication import is_end_user, is_service
from .models import Account


class IsService(BasePermission):
    message = "This route needs a service key."

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return is_service(request.user)


class IsEndUser(BasePermission):
    """A user with a credit account. A login without one (an operator made with createsuperuser)
    is refused; reading the account here keeps it on the user (`request.user.account`)."""

    message = "This route is for end users with a credit account (session or personal token)."

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        if not is_end_user(request.user):
            return False
        try:
            request.user.account  # noqa: B018 (read for its DoesNotExist, and kept on the user)
        except Account.DoesNotExist:
            return False
        return True


def end_user_account(request: Any) -> Account:
    """The caller's account, on a route IsEndUser admitted (which read it)."""
    return request.user.account  # type: ignore[no-any-return]
