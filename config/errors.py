"""One error shape for every response: {"error": {"code", "message", ...details}}."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.views import defaults
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from .outages import report_failure

logger = logging.getLogger(__name__)


VALIDATION_ERROR = "validation_error"
NON_FIELD = "non_field_errors"


class DomainError(Exception):
    """A refusal raised by an app's services: the API answers it with `status_code` and `code`,
    its `details` as further keys of the error. Each app subclasses it with its own kinds, which
    this module does not know."""

    status_code = 400
    code = "error"
    default_message = "The request could not be carried out."
    # The request field a validation_error is about, unless the raiser names one (`field=`).
    field = NON_FIELD

    def __init__(self, message: str | None = None, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        if self.code == VALIDATION_ERROR:
            self.details = {"fields": {field or self.field: [self.message]}, **details}


class ApiError(exceptions.APIException):
    """An API error with an explicit code; raise it from views for documented failures."""

    def __init__(self, status_code: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = code
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """Every 400 validation_error says which fields are wrong, as DRF does: `fields: {name:
    [messages]}` (`non_field_errors` for the request as a whole)."""
    if code == VALIDATION_ERROR and "fields" not in details:
        details = {"fields": {NON_FIELD: [message]}, **details}
    return {"error": {"code": code, "message": message, **details}}


def validation_body(detail: Any) -> dict[str, Any]:
    """The body of a 400 validation_error for a serializer's error detail."""
    return error_body("validation_error", _validation_message(detail), fields=detail)


def _validation_message(detail: Any) -> str:
    if isinstance(detail, dict) and detail:
        field, errors = next(iter(detail.items()))
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            return f"{field}: {_validation_message(first)}"
        return f"{field}: {first}" if field != "non_field_errors" else str(first)
    if isinstance(detail, list) and detail:
        return str(detail[0])
    return str(detail)


def domain_error_response(exc: DomainError) -> Response:
    return Response(error_body(exc.code, exc.message, **exc.details), status=exc.status_code)


# error_body()'s shape, for the API description of every error response (no docstrings: the
# schema would publish them).
class ErrorDetailOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorOut(serializers.Serializer):
    error = ErrorDetailOut()


_SIMPLE = {
    exceptions.NotAuthenticated: (401, "authentication_failed"),
    exceptions.AuthenticationFailed: (401, "authentication_failed"),
    exceptions.PermissionDenied: (403, "permission_denied"),
    exceptions.NotFound: (404, "not_found"),
    exceptions.MethodNotAllowed: (405, "method_not_allowed"),
    exceptions.NotAcceptable: (406, "not_acceptable"),
    exceptions.UnsupportedMediaType: (415, "unsupported_media_type"),
    exceptions.ParseError: (400, "validation_error"),
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return domain_error_response(exc)
    if isinstance(exc, ApiError):
        response = Response(error_body(exc.error_code, str(exc.detail), **exc.details), status=exc.status_code)
        if exc.error_code == SERVICE_UNAVAILABLE:
            response["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    if isinstance(exc, DATABASE_DOWN):
        return unavailable_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(error_body("request_too_large", "The request body is too large."), status=413)
    if isinstance(exc, exceptions.ValidationError):
        return Response(validation_body(exc.detail), status=400)
    if isinstance(exc, exceptions.Throttled):
        wait = int(getattr(exc, "wait", None) or 1)
        response = Response(error_body("rate_limited", "Too many requests; retry later.", retry_after=wait), status=429)
        response["Retry-After"] = str(wait)
        return response
    for exc_type, (status, code) in _SIMPLE.items():
        if isinstance(exc, exc_type):
            response = Response(error_body(code, str(getattr(exc, "detail", ""))), status=status)
            if status == 401:
                response["WWW-Authenticate"] = "Bearer"
            return response
    if isinstance(exc, exceptions.APIException):
        return Response(error_body("error", str(exc.detail)), status=exc.status_code)
    logger.exception("unhandled error in API view", exc_info=exc)
    return Response(error_body("internal_error", "An internal error occurred."), status=500)


# PostgreSQL unreachable (refused, timed out, the pool without a connection to give, a server
# shutting down): the caller retries, so 503 service_unavailable, not a 500 with a traceback.
# Errors of a statement (IntegrityError, DataError, ...) are not these and stay 500s.
DATABASE_DOWN = (db.OperationalError, db.InterfaceError)
SERVICE_UNAVAILABLE = "service_unavailable"
RETRY_AFTER_SECONDS = "1"


def database_failure(exc: BaseException) -> None:
    """Count and log a request's DATABASE_DOWN error for /metrics: an outage (`request`), or a
    transaction PostgreSQL rolled back for a lock conflict (`conflict`: deadlock detected, a
    serialization failure; SQLSTATE class 40). The caller answers both with 503 and Retry-After,
    as a retry succeeds; a conflict is not an outage, and since movements take their locks in one
    order, one is a bug: logged with its traceback, not counted among outages."""
    if str(getattr(exc.__cause__, "sqlstate", "")).startswith("40"):
        report_failure("postgresql", "conflict", exc)
        logger.error("transaction rolled back for a lock conflict", exc_info=exc)
        return
    report_failure("postgresql", "request", exc)


def unavailable_response(exc: BaseException) -> Response:
    database_failure(exc)
    response = Response(
        error_body(SERVICE_UNAVAILABLE, "A service the API depends on is unavailable; retry."), status=503
    )
    response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


# Django-level handlers, for requests that never reach a DRF view.
# Pages under /admin/ (config/urls.py) answer errors with Django's HTML pages.
ADMIN_PATH = "/admin/"


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse(error_body("validation_error", "Bad request."), status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(ADMIN_PATH):  # the admin is HTML: Django's own page
        return defaults.permission_denied(request, exception or DjangoPermissionDenied(), "admin/403.html")
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(ADMIN_PATH):
        return defaults.page_not_found(request, exception or Http404())
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so it can tell a database outage apart.
    error = sys.exc_info()[1]
    if isinstance(error, DATABASE_DOWN):
        database_failure(error)
        response = JsonResponse(
            error_body(SERVICE_UNAVAILABLE, "A service the site depends on is unavailable; retry."), status=503
        )
        response["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    return JsonResponse(error_body("internal_error", "An internal error occurred."), status=500)


class RequestBodyLimitMiddleware:
    """Reads API request bodies through Django's size check before DRF streams them.

    DRF's JSON parser reads the raw stream, which skips DATA_UPLOAD_MAX_MEMORY_SIZE; reading
    `request.body` here applies the limit and gives the idempotency fingerprint the same bytes.
    """

    def __init__(self, get_response):  # type: ignore[no-untyped-def]
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("POST", "PUT", "PATCH") and request.path.startswith(("/api/", "/stripe/")):
            # Django reads CONTENT_LENGTH bytes, so a chunked body would be read as empty.
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
                message = "Send the body with a Content-Length header; chunked bodies are not accepted."
                return JsonResponse(error_body("length_required", message), status=411)
            try:
                if request.path.endswith(BATCH_PATH_SUFFIX):
                    _read_batch_body(request)
                else:
                    request.body  # noqa: B018 - reading it is the point
            except RequestDataTooBig:
                return JsonResponse(error_body("request_too_large", "The request body is too large."), status=413)
            except UnreadablePostError:  # the client stopped sending (config/gunicorn_worker.py)
                message = "The request body did not arrive in time."
                return JsonResponse(error_body("request_timeout", message), status=408)
        return self.get_response(request)


# The batch route (up to 1,000 debits) has its own, larger limit: BATCH_MAX_BODY_BYTES.
BATCH_PATH_SUFFIX = "/debits/batch"


def _read_batch_body(request: HttpRequest) -> None:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.BATCH_MAX_BODY_BYTES:
        raise RequestDataTooBig()
    # What HttpRequest.body does, with the batch limit: the stream is bounded by CONTENT_LENGTH.
    request._body = request.read()  # type: ignore[attr-defined]
