"""The daily rollup and the overview page: per day, credits granted (free, paid, adjustment),
spent, expired, clawed back and voided, revenue, and the outstanding paid liability."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
import time_machine
from django.db import connection
from django.urls import reverse

from billing.models import Grant
from billing.services.ledger import (
    account_settle,
    debit_create,
    debit_refund,
    grant_clawback,
    grant_void,
    hold_capture,
    hold_create,
)
from console import rollup
from console.models import DailyRollup, RollupState
from console.rollup import ledger_rollup
from console.schedules import ROLLUP_SCHEDULE_NAME, ROLLUP_TASK
from console.selectors import overview_get
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import pending_purchase
from tests.billing.test_purchases import fulfil

pytestmark = pytest.mark.django_db
DAY1 = datetime(2026, 5, 4, 10, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def roll_up_everything() -> None:
    ledger_rollup()  # marks
    ledger_rollup()  # rolls up to the mark


def test_each_kind_of_movement_lands_in_its_days_figures(pack):
    with time_machine.travel(DAY1, tick=False):
        account = make_account(free=True)
        account_settle(account=account, actor=STAFF)  # 50 free credits
        give(account, 20)  # an adjustment
        give(account, 10, source=Grant.Source.PROMO, expires_at=DAY1 + timedelta(hours=1))  # spent first
        debit = debit_create(account=account, credits=7, actor=STAFF)
        debit_refund(debit=debit, actor=STAFF)
        debit_create(account=account, credits=3, actor=STAFF)
        hold = hold_create(account=account, credits=4, expires_in=600, actor=STAFF)
        hold_capture(hold=hold, credits=3, actor=STAFF)
    with time_machine.travel(DAY2, tick=False):
        purchase = fulfil(pending_purchase(pack, account=account))
        paid_lot = Grant.objects.get(pk=purchase.grant_id)
        grant_clawback(grant=paid_lot, credits=15, actor=STAFF)
        adjustment = Grant.objects.get(account=account, source="adjustment")
        grant_void(grant=adjustment, actor=STAFF)
        account_settle(account=account, actor=STAFF)  # the promo lot lapsed: expire entry
    roll_up_everything()

    first, second = DailyRollup.objects.get(day=DAY1.date()), DailyRollup.objects.get(day=DAY2.date())
    assert (first.granted_free_credits, first.granted_adjustment_credits, first.granted_paid_credits) == (60, 20, 0)
    assert first.spent_credits == 6 and first.revenue_cents == 0  # 7 - 7 refunded + 3 + 3 captured
    assert (second.granted_paid_credits, second.revenue_cents, second.clawed_back_credits) == (115, 1500, 15)
    # The promo lot kept 4 (10, less 3 debited and 3 captured; the refunded 7 came back): they expire on day 2.
    assert (second.voided_credits, second.expired_credits, second.spent_credits) == (20, 4, 0)
    overview = overview_get(today=DAY2.date())
    assert overview.liability_credits == 100 and overview.liability_cents == 1304  # 100 x 1500 / 115, rounded
    assert [row.day for row in overview.days][-2:] == [DAY1.date(), DAY2.date()] and len(overview.days) == 30


def test_a_run_reads_each_entry_once_and_only_up_to_the_previous_runs_mark():
    account = make_account()
    give(account, 10)
    first = ledger_rollup()
    assert not first.advanced and DailyRollup.objects.count() == 0  # the first run only marks
    give(account, 5)  # after the mark: not read by the next run
    ledger_rollup()
    assert sum(DailyRollup.objects.values_list("granted_adjustment_credits", flat=True)) == 10
    ledger_rollup()
    ledger_rollup()
    assert sum(DailyRollup.objects.values_list("granted_adjustment_credits", flat=True)) == 15


@contextmanager
def another_session() -> Iterator[psycopg.Connection]:
    """A second connection to the test database, closed at the end."""
    params = connection.settings_dict
    other = psycopg.connect(host=params["HOST"], port=params["PORT"], user=params["USER"], dbname=params["NAME"])
    try:
        yield other
    finally:
        other.close()


def test_a_transaction_open_since_before_the_mark_holds_the_rollup_back():
    account = make_account()
    give(account, 10)
    with another_session() as other:
        other.execute("SELECT 1")  # opens a transaction that could still be writing entries
        ledger_rollup()  # marks while it is open
        ledger_rollup()
        assert RollupState.objects.get().rolled_up_to_id == 0
        other.rollback()
        ledger_rollup()
        assert RollupState.objects.get().rolled_up_to_id > 0


def test_a_session_idle_in_a_transaction_holds_the_rollup_back_only_until_the_mark_is_trusted(monkeypatch):
    monkeypatch.setattr(rollup, "MARK_TRUST_SECONDS", 1)  # 600 s, with runs every 60 s, made shorter
    account = make_account()
    give(account, 10)
    with another_session() as other:
        other.execute("SELECT 1")  # idle in a transaction for the whole test
        marked = time.monotonic()
        ledger_rollup()
        advanced_after = None
        while advanced_after is None and time.monotonic() - marked < 3:  # runs far more often than the trust
            time.sleep(0.2)
            if ledger_rollup().advanced:
                advanced_after = time.monotonic() - marked
    # Held back while the mark is younger than the trust, then the same mark is trusted.
    assert advanced_after is not None and advanced_after >= 1


def test_the_rollup_schedule_is_installed_and_runs_the_task():
    from django_celery_beat.models import PeriodicTask

    from console.tasks import rollup_ledger

    assert PeriodicTask.objects.get(name=ROLLUP_SCHEDULE_NAME).task == ROLLUP_TASK
    give(make_account(), 3)
    rollup_ledger.apply()
    assert rollup_ledger.apply().get() == RollupState.objects.get().rolled_up_to_id > 0


def test_the_overview_page_shows_the_chart_the_table_and_the_liability(support_client, pack):
    fulfil(pending_purchase(pack))
    roll_up_everything()
    page = support_client.get(reverse("admin:console_dailyrollup_changelist"))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="overview-chart"' in body and "<svg" in body and "<rect" in body
    assert body.count('<tr><th scope="row"') == 31  # 30 days and the total
    assert "115</strong> unspent paid credits, worth\n  <strong>$15</strong> (1500 cents)" in body
    index = support_client.get(reverse("admin:index"))
    assert reverse("admin:console_dailyrollup_changelist") in index.content.decode()


def test_the_liability_is_shown_to_the_cent_however_large(support_client):
    # 2**53 + 1 dollars and 7 cents: past what a float holds to the cent.
    cents = (2**53 + 1) * 100 + 7
    DailyRollup.objects.create(day=date(2026, 5, 4), paid_credits_change=1, paid_value_change_cents=cents)
    page = support_client.get(reverse("admin:console_dailyrollup_changelist"))
    assert "$9,007,199,254,740,993.07" in page.content.decode()


def test_the_overview_reads_no_ledger_row(support_client, django_assert_max_num_queries):
    give(make_account(), 3)
    roll_up_everything()
    with django_assert_max_num_queries(12) as captured:
        support_client.get(reverse("admin:console_dailyrollup_changelist"))
    assert not [q["sql"] for q in captured.captured_queries if "billing_ledgerentry" in q["sql"]]


def test_days_without_movements_show_zeros():
    overview = overview_get(today=date(2026, 1, 31))
    assert len(overview.days) == 30 and all(row.spent_credits == 0 for row in overview.days)
