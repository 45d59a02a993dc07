"""How drf-spectacular documents the API: who may call each route (only the scheme it accepts),
component names, the error responses with their codes as enums, and the response headers every
route may send. billing/schema.py adds billing's error codes and names each route's list."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction, OpenApiResponse

from .permissions import IsEndUser, IsService

SERVICE_KEY = "serviceKey"
USER_TOKEN = "userToken"
SESSION = "cookieAuth"

_INTEGER = {"type": "integer"}
_TEXT = {"type": "string"}

# An error code: its status, what it means, and the details it carries beside `code` and `message`.
ErrorCatalog = dict[str, tuple[int, str, dict[str, Any]]]

GENERAL_ERRORS: ErrorCatalog = {
    "validation_error": (
        400,
        "The body, a query parameter or a name in it (an operation, a pack) is not valid. `fields` maps "
        "each wrong field to its messages (`non_field_errors` for the request as a whole).",
        {
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": _TEXT},
                "description": "Field name: its messages.",
            },
        },
    ),
    "idempotency_key_required": (400, "The Idempotency-Key header is missing or not 1-255 printable ASCII.", {}),
    "authentication_failed": (401, "No valid `Authorization: Bearer` key or token.", {}),
    "permission_denied": (403, "The caller may not use this route (service routes need a service key).", {}),
    "not_found": (404, "No such object.", {}),
    "not_acceptable": (406, "The Accept header names no type this route answers (JSON).", {}),
    "idempotency_key_reused": (409, "This Idempotency-Key was used with a different request.", {}),
    "request_timeout": (408, "The body stopped arriving (GUNICORN_CLIENT_TIMEOUT between reads); send it again.", {}),
    "length_required": (411, "A chunked body: send it with a Content-Length header.", {}),
    "request_too_large": (413, "The body is over the limit (64 KiB; BATCH_MAX_BODY_BYTES for a batch).", {}),
    "unsupported_media_type": (415, "The body is not `application/json`.", {}),
    "rate_limited": (
        429,
        "Too many requests: retry after `retry_after` seconds (also the Retry-After header). Nothing moved.",
        {"retry_after": {**_INTEGER, "description": "Seconds to wait."}},
    ),
    "service_unavailable": (503, "The database or another dependency is unreachable: retry (Retry-After).", {}),
}

# Codes every route can answer, and the groups routes share.
ANY_ROUTE = ("not_acceptable", "rate_limited", "service_unavailable")
SIGNED_IN = ("authentication_failed", "permission_denied")
WITH_BODY = ("validation_error", "unsupported_media_type", "request_timeout", "length_required", "request_too_large")


def error_schema(catalog: ErrorCatalog, codes: list[str]) -> dict[str, Any]:
    """The error shape for these codes: `code` an enum of them, with the details they carry."""
    details: dict[str, Any] = {}
    for code in codes:
        details.update(catalog[code][2])
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {**_TEXT, "description": "For people; do not parse it."},
                    **details,
                },
            }
        },
    }


def error_responses(catalog: ErrorCatalog, *codes: str) -> dict[int, OpenApiResponse]:
    """A route's error responses, one per status, for these codes and those of ANY_ROUTE."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *ANY_ROUTE)):
        by_status.setdefault(catalog[code][0], []).append(code)
    return {
        status: OpenApiResponse(
            error_schema(catalog, listed),
            description="\n".join(f"- `{code}`: {catalog[code][1]}" for code in listed),
        )
        for status, listed in sorted(by_status.items())
    }


def errors(*codes: str) -> dict[int, OpenApiResponse]:
    return error_responses(GENERAL_ERRORS, *codes)


TOKEN_ERRORS = errors(*WITH_BODY, "authentication_failed")

# Headers config/errors.py sends with these statuses, documented on every response that has one.
_STATUS_HEADERS = {
    "401": {"WWW-Authenticate": "`Bearer`: the scheme to authenticate with."},
    "429": {"Retry-After": "Seconds to wait before retrying."},
    "503": {"Retry-After": "Seconds to wait before retrying."},
}


def document_status_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the headers of _STATUS_HEADERS on every such answer."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                for name, description in _STATUS_HEADERS.get(status, {}).items():
                    header_type = _INTEGER if name == "Retry-After" else _TEXT
                    response.setdefault("headers", {})[name] = {"schema": header_type, "description": description}
    return result


class ApiAutoSchema(AutoSchema):
    """Operation ids from the views' names, component names as the serializers say
    (DebitRequest, not DebitRequestRequest; Debit for DebitOut). Each route's security comes
    from its permission (BearerScheme, SessionScheme below): a service route accepts only a
    service key, a /me route a personal token or the session, an open route anyone."""

    def get_operation_id(self) -> str:
        """The view's name, which a generated client makes its method's: `debitCreate` for
        DebitCreateView, with the HTTP method first on a view that answers several
        (`putNotifications`)."""
        name = type(self.view).__name__.removesuffix("View")
        handlers = [m for m in ("get", "post", "put", "patch", "delete") if hasattr(self.view, m)]
        if len(handlers) > 1:
            return self.method.lower() + name
        return name[:1].lower() + name[1:]

    def get_serializer_name(self, serializer: Any, direction: Direction) -> str:
        name = super().get_serializer_name(serializer, direction)
        if direction == "request":
            return name.removesuffix("Request")  # spectacular adds it back to request components
        return name.removesuffix("Out") or name


def _permission_classes(auto_schema: AutoSchema) -> set[type]:
    return {type(permission) for permission in auto_schema.view.get_permissions()}


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerAuthentication"
    name = [SERVICE_KEY, USER_TOKEN]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "description": "A service key (sk_..., `manage.py create_service_key NAME`): service routes only.",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An end user's personal token (POST /auth/token): /me routes only.",
            },
        ]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        permissions = _permission_classes(auto_schema)
        if IsService in permissions:
            return [{SERVICE_KEY: []}]
        if IsEndUser in permissions:
            return [{USER_TOKEN: []}]
        return []  # an open route: anyone (drf-spectacular adds the empty requirement)


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.CsrfSessionAuthentication"
    name = SESSION

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The web pages' login session (with its CSRF token): /me routes only.",
        }

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{SESSION: []}] if IsEndUser in _permission_classes(auto_schema) else []
