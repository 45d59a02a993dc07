"""The scheduled jobs: free monthly refill, grant expiry and hold timeouts, set-based."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import time_machine
from celery.exceptions import Retry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import Account
from billing.models import BillingPolicy, Grant, Hold, JobChunk, JobRun, LedgerEntry
from billing.policy import policy_get
from billing.selectors import balance_get
from billing.services.jobs import (
    job_chunk_run,
    job_run_inline,
    job_start,
    pending_chunk_ids,
)
from billing.services.ledger import Actor, debit_create, free_grant_ensure, hold_create
from billing.tasks import run_job_chunk
from tests.billing.factories import give, make_account
from tests.billing.period_oracle import add_months, period_at
from tests.billing.test_celery_integration import this_database_url
from tests.test_database_outage import database_down

pytestmark = pytest.mark.django_db
SVC = Actor("service", "1")
REFILL = JobRun.Job.REFILL


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def refill(now: datetime, size: int = 10_000) -> int:
    return job_run_inline(job=REFILL, now=now, size=size).rows


def free_grants(account: Account) -> list[tuple[datetime, datetime, int]]:
    rows = Grant.objects.filter(account=account, source="free_monthly").order_by("period_start")
    return [(g.period_start, g.expires_at, g.amount) for g in rows]


def test_refill_grants_the_first_period_then_15_a_month_without_rollover(assert_ledger_clean):
    account = make_account(now=utc(2027, 3, 5, 14, 30), free=True)

    assert refill(utc(2027, 3, 5, 15)) == 1
    assert refill(utc(2027, 4, 5, 0, 5)) == 1
    assert refill(utc(2027, 5, 5, 0, 5)) == 1

    assert free_grants(account) == [
        (utc(2027, 3, 5), utc(2027, 4, 5), 50),
        (utc(2027, 4, 5), utc(2027, 5, 5), 15),
        (utc(2027, 5, 5), utc(2027, 6, 5), 15),
    ]
    # No rollover: what is left of earlier periods is not available.
    assert balance_get(account=account, now=utc(2027, 5, 6)).available == 15
    assert_ledger_clean()


@pytest.mark.parametrize(
    ("signup", "refills", "expected_starts"),
    [
        # Signup on the 31st anchors on the 28th, through February in a leap and a common year.
        (utc(2028, 1, 31, 10), [utc(2028, 2, 28, 0, 5), utc(2028, 3, 28, 0, 5)], [28, 28]),
        (utc(2027, 1, 31, 10), [utc(2027, 2, 28, 0, 5), utc(2027, 3, 28, 0, 5)], [28, 28]),
        (utc(2027, 1, 29, 10), [utc(2027, 2, 28, 0, 5)], [28]),
        (utc(2027, 1, 30, 10), [utc(2027, 2, 28, 0, 5)], [28]),
        # December into January.
        (utc(2027, 12, 15, 10), [utc(2028, 1, 15, 0, 5)], [15]),
    ],
)
def test_refill_periods_across_month_ends(signup, refills, expected_starts, assert_ledger_clean):
    account = make_account(now=signup, free=True)
    refill(signup)
    for moment in refills:
        refill(moment)

    grants = free_grants(account)
    assert [amount for _, _, amount in grants] == [50] + [15] * len(refills)
    assert [start.day for start, _, _ in grants[1:]] == expected_starts
    for (start, end, _), moment in zip(grants[1:], refills, strict=True):
        assert start <= moment < end
        assert end == add_months(start, 1, start.day)
    assert_ledger_clean()


def test_the_job_computes_every_period_as_the_ledger_service_does(assert_ledger_clean):
    """The SQL period arithmetic against the period oracle, over many random signups and clocks."""
    rng = random.Random(20271)
    accounts = []
    for _ in range(60):
        signup = utc(2027, 1, 1) + timedelta(seconds=rng.randrange(0, 400 * 86400))
        accounts.append(make_account(now=signup, free=True))
    moments = sorted(utc(2027, 1, 1) + timedelta(seconds=rng.randrange(0, 800 * 86400)) for _ in range(6))
    for moment in moments:
        refill(moment, size=7)
        for account in accounts:
            period = period_at(
                first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=moment
            )
            grant = Grant.objects.filter(account=account, source="free_monthly", period_start=period.start).first()
            assert grant is not None, (account.first_period_start, moment)
            assert grant.expires_at == period.end
            assert grant.amount == (50 if period.index == 0 else 15)
    assert_ledger_clean()


def test_running_the_refill_twice_grants_once(assert_ledger_clean):
    accounts = [make_account(now=utc(2027, 3, d), free=True) for d in (1, 9, 17)]
    now = utc(2027, 4, 20)

    assert refill(now) == 3
    assert refill(now) == 0

    for account in accounts:
        assert len(free_grants(account)) == 1
    assert LedgerEntry.objects.filter(kind="grant").count() == 3
    assert_ledger_clean()


def test_a_suspended_account_is_skipped(assert_ledger_clean):
    active = make_account(now=utc(2027, 3, 1), free=True)
    suspended = make_account(now=utc(2027, 3, 1), free=True, status=Account.Status.SUSPENDED)

    refill(utc(2027, 3, 2))

    assert len(free_grants(active)) == 1
    assert free_grants(suspended) == []
    assert_ledger_clean()


def test_the_lazy_grant_and_the_job_grant_a_period_once_whichever_comes_first(assert_ledger_clean):
    lazy_first = make_account(now=utc(2027, 3, 1), free=True)
    job_first = make_account(now=utc(2027, 3, 1), free=True)
    # A grant settles the account first: each gets its first period's 50 with it.
    give(lazy_first, 5, now=utc(2027, 3, 1))
    give(job_first, 5, now=utc(2027, 3, 1))
    debit_create(account=lazy_first, credits=1, actor=SVC, now=utc(2027, 4, 1, 0, 1))

    refill(utc(2027, 4, 1, 0, 5))
    debit_create(account=job_first, credits=1, actor=SVC, now=utc(2027, 4, 1, 0, 6))
    assert free_grant_ensure(account=job_first, actor=SVC, now=utc(2027, 4, 2)) is None

    for account in (lazy_first, job_first):
        assert [amount for _, _, amount in free_grants(account)] == [50, 15]
    assert_ledger_clean()


def test_balance_reads_grant_the_current_period_on_the_spot(api, assert_ledger_clean):
    account = make_account(now=utc(2027, 3, 1), free=True)

    with time_machine.travel(utc(2027, 3, 10), tick=False):
        body = api.get(f"/accounts/{account.public_id}/balance").json()

    assert (body["available"], body["free"]) == (50, 50)
    assert refill(utc(2027, 3, 10)) == 0
    assert_ledger_clean()


def test_a_policy_change_applies_to_the_next_refill():
    account = make_account(now=utc(2027, 3, 1), free=True)
    refill(utc(2027, 3, 1, 1))
    BillingPolicy.objects.filter(pk=policy_get().pk).update(free_credits_per_period=20)

    refill(utc(2027, 4, 1, 1))

    assert [amount for _, _, amount in free_grants(account)] == [50, 20]


def test_a_run_records_its_chunks_counts_and_duration(assert_ledger_clean):
    for day in range(1, 8):
        make_account(now=utc(2027, 3, day), free=True)

    run = job_start(job=REFILL, now=utc(2027, 3, 10), chunk_accounts=3)
    chunk_ids = pending_chunk_ids(run)
    assert run.chunks_total == len(chunk_ids) == 3
    for chunk_id in chunk_ids:
        job_chunk_run(chunk_id=chunk_id)
    # A redelivered chunk is not done twice.
    assert job_chunk_run(chunk_id=chunk_ids[0]) is None

    run.refresh_from_db()
    assert (run.status, run.chunks_done, run.rows_done, run.credits_moved) == ("completed", 3, 7, 350)
    assert run.finished_at is not None and run.duration is not None
    assert sorted(JobChunk.objects.filter(run=run).values_list("rows_done", flat=True)) == [1, 3, 3]
    assert_ledger_clean()


def test_a_second_start_waits_for_a_live_run_and_replaces_a_stale_one(settings):
    make_account(now=utc(2027, 3, 1), free=True)
    first = job_start(job=REFILL, now=utc(2027, 3, 2))

    assert job_start(job=REFILL, now=utc(2027, 3, 2)) is None

    settings.JOB_STALE_AFTER_SECONDS = 0
    second = job_start(job=REFILL, now=utc(2027, 3, 2))
    assert second is not None
    first.refresh_from_db()
    assert first.status == JobRun.Status.ABANDONED


def test_expiry_job_writes_expire_entries_for_lapsed_lots(assert_ledger_clean):
    accounts = [make_account(now=utc(2027, 1, 1)) for _ in range(4)]
    for i, account in enumerate(accounts):
        give(account, 10, expires_at=utc(2027, 2, 1), now=utc(2027, 1, 1))
        give(account, 5 + i, expires_at=utc(2027, 2, 1, 12), now=utc(2027, 1, 1))
        give(account, 3, now=utc(2027, 1, 1))
        debit_create(account=account, credits=12, actor=SVC, now=utc(2027, 1, 2))

    result = job_run_inline(job=JobRun.Job.EXPIRE_GRANTS, now=utc(2027, 2, 1, 12), size=3)

    # 12 spent of the earliest lot (10) and 2 of the second; both lapsed lots expire the rest.
    assert result.rows == 4  # per account the second lot; the first was spent to zero
    assert result.credits == sum(5 + i - 2 for i in range(4))
    for account in accounts:
        account.refresh_from_db()
        assert account.available_credits == 3
    assert job_run_inline(job=JobRun.Job.EXPIRE_GRANTS, now=utc(2027, 2, 2)).rows == 0
    assert_ledger_clean()


def test_hold_timeout_job_releases_lapsed_holds_and_expires_returns_to_lapsed_lots(assert_ledger_clean):
    start = utc(2027, 1, 1)
    accounts = []
    for _ in range(5):
        account = make_account(now=start)
        give(account, 2, expires_at=start + timedelta(minutes=10), now=start)
        give(account, 8, now=start)
        hold_create(account=account, credits=4, expires_in=900, actor=SVC, now=start)
        hold_create(account=account, credits=1, expires_in=3600, actor=SVC, now=start)
        accounts.append(account)

    result = job_run_inline(job=JobRun.Job.RELEASE_HOLDS, now=start + timedelta(minutes=20), size=2)

    assert result.rows == 5  # the 15-minute holds; the hour-long ones stay pending
    assert Hold.objects.filter(status="pending").count() == 5
    for account in accounts:
        account.refresh_from_db()
        # 4 came back: 2 to the lapsed lot (expired at once), 2 to the lasting one.
        assert (account.available_credits, account.held_credits) == (7, 1)
        assert balance_get(account=account, now=start + timedelta(minutes=20)).available == 7
    assert LedgerEntry.objects.filter(kind="expire", actor_id="hold_timeouts").count() == 5
    assert_ledger_clean()


def test_run_job_command_runs_a_job_and_refuses_bad_arguments(capsys, time_machine):
    make_account(now=utc(2027, 3, 1), free=True)
    time_machine.move_to(utc(2027, 3, 2, 0, 6), tick=False)

    call_command("run_job", "refill", "--as-of", "2027-03-02T00:05:00Z")
    assert "completed" in capsys.readouterr().out

    with pytest.raises(CommandError):
        call_command("run_job", "refill", "--as-of", "yesterday")
    with pytest.raises(CommandError):
        call_command("run_job", "refill", "--as-of", "2027-02-30T00:00:00Z")
    with pytest.raises(CommandError):
        call_command("run_job", "refill", "--chunk-accounts", "0")


@pytest.mark.parametrize(
    "as_of",
    [
        "9999-12-31T23:00:00-05:00",  # no UTC date-time in the database's range
        "0001-01-01T00:30:00+05:00",
        "9999-12-31T00:00:00Z",  # free grants that would expire in year 10000
        "2099-06-01T00:05:00Z",  # every account's free period moved on to 2099
        "2027-03-10T12:05:01Z",  # a second past the margin ahead
        "2027-02-03T11:59:59Z",  # a second before the furthest back
    ],
)
def test_run_job_refuses_an_as_of_far_from_the_clock_and_changes_nothing(as_of, time_machine):
    account = make_account(now=utc(2027, 3, 1), free=True)
    time_machine.move_to(utc(2027, 3, 10, 12), tick=False)
    grants = list(Grant.objects.values_list("pk", "expires_at"))

    with pytest.raises(CommandError, match="--as-of must be from 2027-02-03T12:00:00Z to 2027-03-10T12:05:00Z"):
        call_command("run_job", "refill", "--as-of", as_of)

    assert not JobRun.objects.exists()
    assert list(Grant.objects.values_list("pk", "expires_at")) == grants
    assert Account.objects.get(pk=account.pk).free_period_start == account.free_period_start


@pytest.mark.parametrize("as_of", ["2027-03-10T12:05:00Z", "2027-02-03T12:00:00Z", "2027-03-10T14:00:00+02:00"])
def test_run_job_runs_as_of_any_moment_within_its_bounds(as_of, time_machine, capsys):
    time_machine.move_to(utc(2027, 3, 10, 12), tick=False)
    call_command("run_job", "expire_grants", "--as-of", as_of)
    assert "completed" in capsys.readouterr().out
    assert JobRun.objects.get().as_of == datetime.fromisoformat(as_of)


# --- a chunk's database failing under its task ------------------------------------------------


@pytest.fixture
def retries(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The countdowns of the retries run_job_chunk asks Celery for (none is run)."""
    asked: list[int] = []

    def retry(*, exc: Exception, countdown: int) -> Retry:
        asked.append(countdown)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(run_job_chunk, "retry", retry)
    return asked


def one_refill_chunk() -> int:
    make_account(now=utc(2027, 3, 1), free=True)
    (chunk_id,) = pending_chunk_ids(job_start(job=REFILL, now=utc(2027, 3, 2)))
    return chunk_id


@pytest.mark.django_db(transaction=True)
def test_a_chunk_is_retried_while_the_database_is_down_and_runs_once_it_is_back(retries):
    chunk_id = one_refill_chunk()
    with database_down(), pytest.raises(Retry):
        run_job_chunk(chunk_id)
    assert retries == [1]
    chunk = JobChunk.objects.get(pk=chunk_id)  # nothing could be recorded while it was down
    assert (chunk.status, chunk.failures) == (JobChunk.Status.PENDING, 0)

    assert run_job_chunk(chunk_id) == 1  # the retry, with the database back
    assert JobChunk.objects.get(pk=chunk_id).status == JobChunk.Status.DONE


@pytest.mark.django_db(transaction=True)
def test_a_chunk_whose_connection_was_lost_records_the_failure_and_is_retried(retries):
    chunk_id = one_refill_chunk()
    connection.ensure_connection()  # the connection the chunk will use, ended by the server
    with psycopg.connect(this_database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    with pytest.raises(Retry):
        run_job_chunk(chunk_id)
    assert retries == [1]
    chunk = JobChunk.objects.get(pk=chunk_id)
    assert (chunk.status, chunk.failures) == (JobChunk.Status.PENDING, 1)
    assert "terminating connection" in chunk.last_error, chunk.last_error
