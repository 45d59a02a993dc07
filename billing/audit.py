"""The nightly audits and their alarms: every ledger invariant checked (billing.integrity, as
`check_ledger` does) and the Stripe reconciliation's fixes, each result logged (at ERROR when
something was wrong) and kept for /metrics, where an alert can watch:

- `billing_audit_ledger_breaches`: breaches found by the last audit (0 when the ledger holds);
- `billing_audit_stripe_fixed`: purchases the last reconciliation had to fulfil itself (their
  webhooks never arrived);
- `billing_audit_last_run_timestamp_seconds{audit}`: when each last ran (an alert on its age
  catches an audit that stopped running).

The results live in the shared cache without expiry (every process serves the same figures),
one key per audit, so that two audits finishing together do not overwrite each other's. While
none is recorded (before the first run, or after Redis lost its data) the gauges are absent:
alert on an absent last-run timestamp as on an old one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from django.core.cache import cache
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError

from billing.integrity import ledger_breaches
from config.outages import report_failure

logger = logging.getLogger(__name__)

_AUDITS = ("ledger", "stripe")


def _cache_key(audit: str) -> str:
    return f"billing:audit:{audit}:v2"


# Breaches logged one per line, at most this many (the count says how many there were).
LOGGED_BREACHES = 100


def _record(audit: str, found: int, now: datetime) -> None:
    try:
        cache.set(_cache_key(audit), (found, now.timestamp()), None)
    except RedisError:
        logger.exception("audit %s: its result could not be kept for /metrics", audit)


def ledger_audit(*, now: datetime) -> int:
    """Check every ledger invariant; each breach is an ERROR line. Returns how many were found."""
    breaches = ledger_breaches()
    for breach in breaches[:LOGGED_BREACHES]:
        logger.error("ledger audit: breach: %s", breach)
    if breaches:
        logger.error("ledger audit: %d breach(es); run manage.py check_ledger for the full report", len(breaches))
    else:
        logger.info("ledger audit: every invariant holds")
    _record("ledger", len(breaches), now)
    return len(breaches)


def stripe_fixes_record(*, fulfilled: list[str], now: datetime) -> None:
    """A reconciliation that had to fulfil purchases means webhooks are being lost: ERROR."""
    if fulfilled:
        logger.error(
            "stripe reconciliation fulfilled %d purchase(s) whose webhook never arrived: %s",
            len(fulfilled),
            ", ".join(fulfilled[:LOGGED_BREACHES]),
        )
    _record("stripe", len(fulfilled), now)


class AuditCollector:
    """The audits' gauges for /metrics (registered by billing/apps.py)."""

    def collect(self) -> Iterator[Metric]:
        try:
            kept = cache.get_many([_cache_key(audit) for audit in _AUDITS])
        except RedisError as error:  # the gauges are left out this once; the outage is counted
            report_failure("redis", "metrics", error)
            return
        names = {"ledger": "billing_audit_ledger_breaches", "stripe": "billing_audit_stripe_fixed"}
        helps = {
            "ledger": "Ledger invariant breaches found by the last nightly audit.",
            "stripe": "Purchases the last Stripe reconciliation fulfilled because their webhook never arrived.",
        }
        last_run = GaugeMetricFamily(
            "billing_audit_last_run_timestamp_seconds", "When each audit last ran (Unix time).", labels=["audit"]
        )
        results = [(audit, kept[_cache_key(audit)]) for audit in _AUDITS if _cache_key(audit) in kept]
        for audit, (found, at) in results:
            yield GaugeMetricFamily(names[audit], helps[audit], value=found)
            last_run.add_metric([audit], at)
        if results:
            yield last_run
