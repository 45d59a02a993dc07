"""Error answers in a form the caller reads: the site's own HTML page for a browser on the site's
pages (never Django's debug page listing the URL patterns, never JSON), the error shape on API
paths. Django answers an unknown URL with its debug page when DEBUG is on and with the handler
otherwise, and a view's method check with an empty 405: this middleware sees every answer."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from .errors import DATABASE_DOWN, RETRY_AFTER_SECONDS, SERVICE_UNAVAILABLE, ApiError, database_failure, error_body

# Paths whose answers are not the site's pages: the API and the webhook answer JSON, the admin,
# static files and the probes their own.
API_PATHS = ("/api/", "/stripe/")
OTHER_PATHS = ("/admin/", "/static/", "/metrics", "/healthz", "/readyz")
_SITE_PAGE = "site_page"

PAGES = {
    400: ("Something in that request was wrong", "The page could not understand the request. Go back and try again."),
    403: ("Not allowed", "You may not open this page. If you think you should, log in first."),
    404: ("Page not found", "There is no page at this address. Check the link, or start from your billing page."),
    405: ("This page does not work that way", "This address is not opened this way; use the page's own buttons."),
    500: ("Something went wrong on our side", "The page could not be shown. Try again in a minute."),
    503: ("Temporarily unavailable", "A service the site depends on is unavailable. Try again in a minute."),
}
API_CODES = {404: ("not_found", "Not found."), 405: ("method_not_allowed", "This method is not allowed here.")}


def site_page(response: HttpResponse) -> HttpResponse:
    """Mark a page a view rendered itself (a 404 that says which purchase is missing, say), which
    this middleware must leave as it is."""
    setattr(response, _SITE_PAGE, True)
    return response


def error_page(request: HttpRequest, status: int) -> HttpResponse:
    """The page for `status`. A server error's page is rendered without the request: its context
    (the logged-in user, from the session) may need the database that just failed."""
    title, message = PAGES.get(status, PAGES[500 if status >= 500 else 400])
    context = {"title": title, "message": message}
    if status >= 500:
        return site_page(HttpResponse(render_to_string("web/message.html", context), status=status))
    return site_page(render(request, "web/message.html", context, status=status))


def _is_empty(response: HttpResponse) -> bool:
    return not getattr(response, "streaming", False) and not response.content


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class SiteErrorPagesMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or getattr(response, _SITE_PAGE, False):
            return response
        if request.path.startswith(API_PATHS):
            if response.status_code in API_CODES and not _is_json(response):
                code, message = API_CODES[response.status_code]
                return _with_guidance(response, JsonResponse(error_body(code, message), status=response.status_code))
            return response
        if request.path.startswith(OTHER_PATHS):
            return response
        if response.status_code in (404, 405) or _is_json(response) or _is_empty(response):
            return _with_guidance(response, error_page(request, response.status_code))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A page whose dependency is down (PostgreSQL unreachable, or Redis when the limits fail
        closed) answers the site's 503 page with Retry-After, the outage counted and logged as
        config.outages does (at most once a minute), not a 500 and a traceback per request."""
        if request.path.startswith(API_PATHS + OTHER_PATHS):
            return None  # the API's handler and the admin's pages answer their own
        if isinstance(exception, DATABASE_DOWN):
            database_failure(exception)
        elif not (isinstance(exception, ApiError) and exception.error_code == SERVICE_UNAVAILABLE):
            return None
        response = error_page(request, 503)
        response["Retry-After"] = RETRY_AFTER_SECONDS
        return response


def _with_guidance(old: HttpResponse, new: HttpResponse) -> HttpResponse:
    """`new` with the headers of `old` that tell the caller what to do (Allow, Retry-After)."""
    for header in ("Allow", "Retry-After"):
        if old.has_header(header):
            new[header] = old[header]
    return new
