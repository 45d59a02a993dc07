"""Prometheus metrics: every request counted and timed, and /metrics to scrape them.

MetricsMiddleware counts each request by route (the URL pattern's name, so the label has a
bounded set of values), method and status, and times it by route. Under gunicorn every worker
process keeps its own figures; prometheus_client's multiprocess mode adds them up at scrape
time: config/gunicorn.py gives the workers a directory for them (PROMETHEUS_MULTIPROC_DIR), set
before this module is first imported in a worker. Elsewhere (runserver, tests) the figures are
the process's own.

/metrics also serves the figures of the collectors the apps register (register_collector(), from
their AppConfig.ready(); billing registers the ledger's state). It answers only a bearer token
equal to METRICS_TOKEN: the figures are the business's, so without a token set it is off (403).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from . import outages
from .errors import error_body

# The request figures live in a registry of their own: the default one also collects the
# process's CPU and memory, which in multiprocess mode would be the scraped worker's alone.
_requests = CollectorRegistry(auto_describe=False)
_requests.register(outages.FAILURES)
REQUESTS = Counter(
    "billing_http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
    registry=_requests,
)
DURATION = Histogram(
    "billing_http_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=_requests,
)
# A client chooses the method: any other is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The apps' own figures, read at each scrape by the collectors they register.
_apps = CollectorRegistry(auto_describe=False)


def register_collector(collector: Collector) -> None:
    """Serve `collector`'s figures at /metrics too; an app calls this from its AppConfig.ready()."""
    _apps.register(collector)


def route_of(request: HttpRequest) -> str:
    """The URL pattern's name ("balance", "admin:index"), its pattern when unnamed, or
    "unmatched" for a path no pattern matched."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or match.route or "unnamed"


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = route_of(request)
        method = request.method if request.method in _METHODS else "other"
        REQUESTS.labels(route, method, str(response.status_code)).inc()
        DURATION.labels(route).observe(time.perf_counter() - started)
        return response


class _Scrape:
    """What one scrape collects: generate_latest() asks only for collect()."""

    def __init__(self, collectors: Iterable[object]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()  # type: ignore[attr-defined]


@csrf_exempt  # GET only: anything else is a 405, not a CSRF refusal
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse(error_body("permission_denied", "Metrics are off: set METRICS_TOKEN."), status=403)
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not hmac.compare_digest(parts[1].encode(), token.encode()):
        response = JsonResponse(error_body("authentication_failed", "A valid metrics token is required."), status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    requests: object = _requests
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        requests = MultiProcessCollector(None)  # every worker's files, added up
    body = generate_latest(_Scrape([requests, _apps]))  # type: ignore[arg-type]
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
