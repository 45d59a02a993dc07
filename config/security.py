"""A Content-Security-Policy on every HTML page (the site, the admin, the API docs).

Scripts run only from our own origin (no inline script: the docs page loads its start-up script
as a file, SpectacularSwaggerSplitView), nothing may frame the pages, and plugins are off. Inline
style attributes are allowed: the templates use a few, and styles cannot run code. JSON answers
carry no policy; a browser does not render them.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",  # ReDoc renders the schema in a web worker it makes from a blob
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
