"""A dependency that fails (Redis unreachable, timing out): counted for /metrics and logged, at
most once a minute per process and dependency, however many requests meet the failure.

The failures are counted in `billing_dependency_failures_total{dependency, use}` (config/metrics.py
adds every worker's figures up), so an alert can watch the rate while the log stays small: a
Redis outage under load used to log two tracebacks per request.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

logger = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 60.0

FAILURES = Counter(
    "billing_dependency_failures",
    "Calls to a dependency that failed (the request went on without it, or was refused), by use.",
    ["dependency", "use"],
    registry=None,  # config/metrics.py serves it with the request figures
)

_lock = threading.Lock()
# dependency -> (monotonic time of the last log line, failures since it)
_logged: dict[str, tuple[float, int]] = {}


def report_failure(dependency: str, use: str, error: BaseException) -> None:
    """Count one failed call of `dependency` made for `use`, and log it unless this process
    logged one for `dependency` less than a minute ago (the line says how many it left out)."""
    FAILURES.labels(dependency, use).inc()
    now = time.monotonic()
    with _lock:
        last, unlogged = _logged.get(dependency, (float("-inf"), 0))
        if now - last < LOG_INTERVAL_SECONDS:
            _logged[dependency] = (last, unlogged + 1)
            return
        _logged[dependency] = (now, 0)
    suffix = f" ({unlogged} more failures since the last report)" if unlogged else ""
    logger.warning("%s unavailable for %s: %s: %s%s", dependency, use, type(error).__name__, error, suffix)
