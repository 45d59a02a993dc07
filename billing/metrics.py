"""The ledger's state as Prometheus gauges, for /metrics (registered with config/metrics.py by
billing/apps.py).

Read from the database at scrape time, and kept in the shared cache for
METRICS_STATE_SECONDS: the account totals scan every account row, which at millions of accounts
is worth doing once per interval, not once per scrape or per web process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError

from accounts.models import Account
from billing.models import Grant, Hold, JobRun, Purchase, StripeEvent
from billing.selectors import lapsed
from config.outages import report_failure

logger = logging.getLogger(__name__)

_CACHE_KEY = "metrics:ledger-state:v1"


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    label: str  # "" for a gauge without labels
    samples: tuple[tuple[str, float], ...]  # (label value, value)


# gauge -> (name, help, label); every label value a gauge can have is listed, at 0 when absent.
_GAUGES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "accounts": ("billing_accounts", "Accounts by status.", "status", ("active", "suspended")),
    "available": (
        "billing_credits_available",
        "Credits the accounts can spend (their cached balances), by account status.",
        "status",
        ("active", "suspended"),
    ),
    "held": (
        "billing_credits_held",
        "Credits reserved by pending holds, by account status.",
        "status",
        ("active", "suspended"),
    ),
    "remaining": (
        "billing_credits_remaining",
        "Credits left on unexpired lots: paid (purchases) and free (every other source).",
        "kind",
        ("free", "paid"),
    ),
    "holds": (
        "billing_holds_pending",
        "Pending holds: open, or lapsed and waiting for the release job.",
        "state",
        ("open", "lapsed"),
    ),
    "events": (
        "billing_stripe_events_open",
        "Stripe webhook events not processed yet (received) or failed.",
        "status",
        ("received", "failed"),
    ),
    "purchases": (
        "billing_purchases",
        "Purchases by status.",
        "status",
        ("pending", "paid", "refunded", "partially_refunded", "disputed", "canceled"),
    ),
    "job_completed": (
        "billing_job_last_completed_timestamp_seconds",
        "When each scheduled job's latest completed run finished (Unix time).",
        "job",
        (),
    ),
    "job_running": ("billing_job_runs_running", "Runs of each job still running.", "job", ()),
}


def ledger_state() -> list[Gauge]:
    """The gauges, read now from the database (six aggregate queries; the account totals scan
    every account row, the others read partial indexes or small tables)."""
    now = timezone.now()
    found: dict[str, dict[str, float]] = {kind: {} for kind in _GAUGES}
    for row in (
        Account.objects.order_by()
        .values("status")
        .annotate(n=Count("id"), available=Sum("available_credits"), held=Sum("held_credits"))
    ):
        found["accounts"][row["status"]] = row["n"]
        found["available"][row["status"]] = row["available"] or 0
        found["held"][row["status"]] = row["held"] or 0
    lots = Grant.objects.alias(lapsed=lapsed(now)).filter(spendable=True, lapsed=False)
    for lot in lots.order_by().values("source").annotate(left=Sum("remaining")):
        kind = "paid" if lot["source"] == Grant.Source.PURCHASE else "free"
        found["remaining"][kind] = found["remaining"].get(kind, 0) + lot["left"]
    holds = Hold.objects.filter(status=Hold.Status.PENDING).aggregate(
        open=Count("id", filter=~Q(lapsed(now))), lapsed=Count("id", filter=Q(lapsed(now)))
    )
    found["holds"] = {"open": holds["open"], "lapsed": holds["lapsed"]}
    events = StripeEvent.objects.filter(status__in=[StripeEvent.Status.RECEIVED, StripeEvent.Status.FAILED])
    for event in events.order_by().values("status").annotate(n=Count("id")):
        found["events"][event["status"]] = event["n"]
    for purchase in Purchase.objects.order_by().values("status").annotate(n=Count("id")):
        found["purchases"][purchase["status"]] = purchase["n"]
    for run in (
        JobRun.objects.order_by()
        .values("job")
        .annotate(
            last=Max("finished_at", filter=Q(status=JobRun.Status.COMPLETED)),
            running=Count("id", filter=Q(status=JobRun.Status.RUNNING)),
        )
    ):
        if run["last"] is not None:
            found["job_completed"][run["job"]] = run["last"].timestamp()
        found["job_running"][run["job"]] = run["running"]
    gauges = []
    for kind, (name, help_text, label, known) in _GAUGES.items():
        values = {value: 0.0 for value in known} | {key: float(value) for key, value in found[kind].items()}
        gauges.append(Gauge(name, help_text, label, tuple(sorted(values.items()))))
    read_at = (("", time.time()),)
    gauges.append(
        Gauge("billing_state_read_timestamp_seconds", "When these gauges were read (Unix time).", "", read_at)
    )
    return gauges


class LedgerStateCollector:
    """The gauges for one scrape: from the cache while fresh, else read and cached. A failed
    read yields billing_state_up 0 instead of failing the scrape."""

    def collect(self) -> Iterator[Metric]:
        up = 1.0
        gauges = _cached() if settings.METRICS_STATE_SECONDS else None
        if gauges is None:
            try:
                with transaction.atomic():  # a failure rolls back this read alone, not a caller's transaction
                    gauges = ledger_state()
            except Exception:
                logger.exception("metrics: reading the ledger state failed")
                gauges, up = [], 0.0
            else:
                if settings.METRICS_STATE_SECONDS:
                    _cache(gauges)
        yield GaugeMetricFamily("billing_state_up", "Whether the ledger state could be read.", value=up)
        for gauge in gauges:
            if not gauge.label:
                yield GaugeMetricFamily(gauge.name, gauge.help, value=gauge.samples[0][1])
                continue
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=[gauge.label])
            for label_value, value in gauge.samples:
                family.add_metric([label_value], value)
            yield family


# Redis failing costs the cached copy only: the scrape still answers (with the dependency
# failures counted, which an alert on the outage needs most).
def _cached() -> list[Gauge] | None:
    try:
        return cache.get(_CACHE_KEY)
    except RedisError as error:
        report_failure("redis", "metrics", error)
        return None


def _cache(gauges: list[Gauge]) -> None:
    try:
        cache.set(_CACHE_KEY, gauges, settings.METRICS_STATE_SECONDS)
    except RedisError as error:
        report_failure("redis", "metrics", error)
