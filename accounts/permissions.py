from __future__ import annotations

from rest_framework.permissions import BasePermission

from .authentication import is_end_user, is_service


class IsService(BasePermission):
    message = "This route needs a service key."

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return is_service(request.user)


class IsEndUser(BasePermission):
    message = "This route is for end users (session or personal token)."

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return is_end_user(request.user)
