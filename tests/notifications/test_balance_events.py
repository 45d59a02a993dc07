"""balance.low and balance.recovered: raised by the database in the movement's own transaction
when available credits cross the account's threshold, once per crossing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection, transaction

from billing.models import JobRun
from billing.services import job_sql
from billing.services.jobs import job_run_inline
from billing.services.ledger import debit_create, hold_create, hold_release
from notifications.models import Event
from notifications.services.preferences import effective_threshold, preferences_update
from tests.billing.factories import STAFF, give, make_account

pytestmark = pytest.mark.django_db


def balance_events(account) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    return [(e.type, e.data) for e in Event.objects.filter(account=account).order_by("id")]


def spend(account, credits: int, **kwargs):  # type: ignore[no-untyped-def]
    return debit_create(account=account, credits=credits, actor=STAFF, reference="test", **kwargs)


def test_crossing_below_the_threshold_raises_balance_low_once_until_it_recovers():
    account = make_account()
    give(account, 12)
    assert balance_events(account) == []  # 0 -> 12 crosses nothing announced

    spend(account, 2)  # 10: not below 10
    assert balance_events(account) == []
    spend(account, 1)  # 9: below
    spend(account, 4)  # 5: still below, nothing new
    assert balance_events(account) == [("balance.low", {"available": 9, "held": 0, "threshold": 10})]

    give(account, 5)  # 10: back at the threshold
    spend(account, 3)  # 7: low again, after a recovery
    assert [t for t, _ in balance_events(account)] == ["balance.low", "balance.recovered", "balance.low"]
    assert balance_events(account)[1][1]["available"] == 10


def test_holds_and_releases_cross_too():
    account = make_account()
    give(account, 11)
    hold = hold_create(account=account, credits=5, expires_in=600, actor=STAFF, reference="h")
    hold_release(hold=hold, actor=STAFF)
    assert [t for t, _ in balance_events(account)] == ["balance.low", "balance.recovered"]


def test_the_event_commits_or_rolls_back_with_the_movement():
    account = make_account()
    give(account, 10)
    with pytest.raises(RuntimeError), transaction.atomic():
        spend(account, 5)
        assert [t for t, _ in balance_events(account)] == ["balance.low"]
        raise RuntimeError("the caller fails after the debit")
    assert balance_events(account) == []
    account.refresh_from_db()
    assert account.available_credits == 10


def test_the_event_carries_the_movements_business_time():
    account = make_account()
    give(account, 10)
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    with time_machine.travel(moment, tick=False):
        spend(account, 1, now=moment)
    assert Event.objects.get(account=account).created_at == moment


def test_an_accounts_own_threshold_replaces_the_default():
    account = make_account()
    give(account, 100)
    assert effective_threshold(account=account) == 10
    preferences_update(account=account, low_balance_threshold=50)
    assert effective_threshold(account=account) == 50
    spend(account, 49)  # 51
    assert balance_events(account) == []
    spend(account, 2)  # 49
    assert balance_events(account) == [("balance.low", {"available": 49, "held": 0, "threshold": 50})]

    preferences_update(account=account, low_balance_threshold=None)
    assert effective_threshold(account=account) == 10
    spend(account, 1)  # 48: above the default again: the next movement says so
    assert [t for t, _ in balance_events(account)] == ["balance.low", "balance.recovered"]


def test_a_movement_that_crosses_nothing_writes_nothing_but_the_movement():
    account = make_account()
    give(account, 100)
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_ins FROM pg_stat_xact_user_tables WHERE relname = 'notifications_event'")
        before = cursor.fetchone()
        spend(account, 1)
        cursor.execute("SELECT n_tup_ins FROM pg_stat_xact_user_tables WHERE relname = 'notifications_event'")
        assert cursor.fetchone() == before
    assert balance_events(account) == []


def test_the_refill_still_skips_its_foreign_key_checks_and_its_grants_still_raise_events():
    """The balance trigger is ENABLE ALWAYS: it fires under session_replication_role = replica,
    which the refill's chunk sets, so the refill keeps skipping its foreign-key checks."""
    signed_up = datetime(2031, 1, 10, tzinfo=UTC)
    account = make_account(now=signed_up, free=True)
    job_run_inline(job=JobRun.Job.REFILL, now=signed_up)  # the first period's 50
    spend(account, 45, now=signed_up)  # 5: low
    assert job_sql.refill_skips_foreign_key_checks()
    job_run_inline(job=JobRun.Job.REFILL, now=datetime(2031, 2, 10, 1, tzinfo=UTC))  # the next period's 15
    account.refresh_from_db()
    assert account.available_credits == 20  # the lapsed 5 leave the cache with the expiry job
    assert [t for t, _ in balance_events(account)] == ["balance.low", "balance.recovered"]
