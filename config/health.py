"""Liveness and readiness probes.

/readyz answers within READY_DEADLINE_SECONDS whatever the dependencies do: each is probed in a
thread of its own and one that has not answered by then counts as unavailable. PostgreSQL is the
source of truth: without it the process is not ready (503). Without Redis the API still serves
(rate limits fail open, service keys are read from the database), so Redis down is reported as
`degraded` with a 200, unless RATE_LIMIT_FAIL_CLOSED makes every limited call a 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

READY_DEADLINE_SECONDS = 0.8


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    finally:
        connection.close()  # the probe's thread ends: its connection goes back (or away)


def _redis_ok() -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _probe_all(probes: dict[str, Callable[[], bool]]) -> dict[str, bool]:
    """Run the probes at once; each one's answer, False for a failure or no answer in time."""
    answers: dict[str, bool] = {}

    def run(name: str, probe: Callable[[], bool]) -> None:
        try:
            answers[name] = probe()
        except Exception as error:
            logger.warning("readiness: %s unreachable: %s: %s", name, type(error).__name__, error)
            answers[name] = False

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in probes.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return {name: answers.get(name, False) for name in probes}


def readyz(request: HttpRequest) -> JsonResponse:
    probes: dict[str, Callable[[], bool]] = {"database": _database_ok}
    if settings.REDIS_URL:
        probes["redis"] = _redis_ok
    answers = _probe_all(probes)
    checks = {"database": "ok" if answers["database"] else "unavailable"}
    ready = answers["database"]
    status = "ok" if ready else "unavailable"
    if "redis" in answers:
        redis_needed = settings.RATE_LIMIT_FAIL_CLOSED
        checks["redis"] = "ok" if answers["redis"] else ("unavailable" if redis_needed else "degraded")
        if not answers["redis"]:
            ready = ready and not redis_needed
            status = "unavailable" if not ready else "degraded"
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)
