"""The nightly audits (billing/audit.py): check_ledger from beat and the reconciliation's fixes,
each breach or fix an ERROR line and a /metrics gauge an alert can watch."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.utils import timezone

from billing import tasks
from billing.schedules import SCHEDULES
from tests.billing.factories import give, make_account
from tests.test_metrics import TOKEN, scrape

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_STATE_SECONDS = 0


def gauge(name: str, **labels: str) -> float | None:
    return scrape().get((name, tuple(sorted(labels.items()))))


def errors(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "billing.audit"]


def test_the_ledger_audit_runs_nightly_from_beat():
    (audit,) = [s for s in SCHEDULES if s.task == "billing.audit_ledger"]
    assert audit.crontab == "30 3 * * *"


def test_a_clean_ledger_audits_to_zero_breaches_without_an_error(caplog):
    give(make_account(), 5)
    assert gauge("billing_audit_ledger_breaches") is None  # never ran: no figure

    assert tasks.audit_ledger() == 0

    assert gauge("billing_audit_ledger_breaches") == 0
    assert gauge("billing_audit_last_run_timestamp_seconds", audit="ledger") == pytest.approx(
        timezone.now().timestamp(), abs=60
    )
    assert errors(caplog) == []


def test_a_breach_is_an_error_line_and_a_gauge(caplog):
    account = make_account()
    give(account, 5)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_account SET available_credits = available_credits + 1 WHERE id = %s", [account.pk]
        )

    found = tasks.audit_ledger()

    assert found >= 1
    assert gauge("billing_audit_ledger_breaches") == found
    lines = errors(caplog)
    assert any(account.public_id in line for line in lines), lines
    assert any(f"{found} breach(es)" in line for line in lines)


def test_a_purchase_the_reconciliation_had_to_fulfil_is_an_error_line_and_a_gauge(caplog):
    from billing.audit import stripe_fixes_record

    stripe_fixes_record(fulfilled=[], now=timezone.now())
    assert gauge("billing_audit_stripe_fixed") == 0 and errors(caplog) == []

    stripe_fixes_record(fulfilled=["pur_lost1", "pur_lost2"], now=timezone.now())

    assert gauge("billing_audit_stripe_fixed") == 2
    assert errors(caplog) == [
        "stripe reconciliation fulfilled 2 purchase(s) whose webhook never arrived: pur_lost1, pur_lost2"
    ]


def test_each_audit_keeps_its_own_figure_when_they_finish_together():
    """Each audit's result is its own cache entry: the one finishing last does not write back
    the other's older figure (or its absence) over it."""
    from billing.audit import ledger_audit, stripe_fixes_record

    when = timezone.now()
    stripe_fixes_record(fulfilled=["pur_lost"], now=when)
    ledger_audit(now=when)
    stripe_fixes_record(fulfilled=[], now=when)

    assert gauge("billing_audit_stripe_fixed") == 0
    assert gauge("billing_audit_ledger_breaches") == 0
    assert gauge("billing_audit_last_run_timestamp_seconds", audit="ledger") == when.timestamp()
    assert gauge("billing_audit_last_run_timestamp_seconds", audit="stripe") == when.timestamp()
