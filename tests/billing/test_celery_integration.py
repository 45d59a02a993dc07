"""The billing jobs run by a real Celery worker process, through real Redis, on PostgreSQL.

Each test starts `celery -A config worker` (prefork pool, not eager mode) on the test's own
database and Redis database, sends tasks through the broker, and polls the database for the
outcome. The data is committed (transactional tests) so the worker sees it. Every worker sets
PGAPPNAME, which names its database sessions in pg_stat_activity: that is how a test finds the
worker's session waiting on a lock, and how teardown makes sure none outlives the worker.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from io import StringIO
from typing import TypeVar
from urllib.parse import quote

import psycopg
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Account
from billing.models import Grant, Hold, JobChunk, JobRun, LedgerEntry
from billing.services.jobs import CHUNK_ACCOUNTS
from billing.services.ledger import Actor, hold_create
from billing.tasks import refill_free_credits, release_expired_holds
from config.celery import app
from tests.billing.factories import give, make_account
from tests.billing.period_oracle import period_at
from tests.celery_worker import CeleryWorker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")

FIRST_PERIOD_CREDITS = 50  # DESIGN.md: free credits in the first period after signup
FREE = Grant.Source.FREE_MONTHLY
SVC = Actor("service", "1")
RUN_SECONDS = 60


def wait_for(condition: Callable[[], T], *, what: str, timeout: float, worker: CeleryWorker | None = None) -> T:
    """Poll until `condition()` is truthy; fail with the worker's log if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if worker is not None and worker.process.poll() is not None:
            pytest.fail(f"the worker exited ({worker.process.returncode}) before {what}\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s" + (f"\n{worker.tail()}" if worker else ""))
        time.sleep(0.1)


def this_database_url() -> str:
    """The database this test runs on (test_<name>, with the xdist suffix), as a URL."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def sessions_named(names: list[str]) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = ANY(%s)", [names])
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator[Callable[..., CeleryWorker]]:
    """Starts real workers on this test's database and broker; kills them all at teardown.

    Depends on `transactional_db` so the workers are gone before the tables are flushed."""
    assert not app.conf.task_always_eager, "tasks must go through the broker"
    broker = redis.Redis.from_url(settings.REDIS_URL)
    broker.flushdb()  # no message left by an earlier test (queued or unacked) reaches these workers
    started: list[CeleryWorker] = []

    def start(*, concurrency: int = 1, env: dict[str, str] | None = None) -> CeleryWorker:
        name = f"billing-itest-{uuid.uuid4().hex[:10]}"
        child_env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "JOB_STALE_AFTER_SECONDS")}
        child_env.update(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            DATABASE_URL=this_database_url(),
            TEST_REDIS_URL=settings.REDIS_URL,
            **(env or {}),
        )
        worker = CeleryWorker.start(child_env, tmp_path / f"{name}.log", name=name, concurrency=concurrency)
        started.append(worker)
        return worker

    yield start

    for worker in started:
        worker.kill()
    names = [worker.app_name for worker in started]
    # A killed worker's session ends once PostgreSQL notices the closed socket; until then it
    # may hold locks that would block the flush of the tables.
    deadline = time.monotonic() + 15
    while sessions_named(names) and time.monotonic() < deadline:
        time.sleep(0.1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(%s)", [names]
        )
    broker.flushdb()


def wait_for_run(job: str, worker: CeleryWorker, *, after: int = 0) -> JobRun:
    def completed() -> JobRun | None:
        return JobRun.objects.filter(job=job, pk__gt=after, status=JobRun.Status.COMPLETED).first()

    return wait_for(completed, what=f"completed {job} run", timeout=RUN_SECONDS, worker=worker)


def skip_account_ids(count: int) -> None:
    """Advance the account id sequence, as rolled-back signups do: ids get gaps."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), nextval(pg_get_serial_sequence(%s, 'id')) + %s)",
            [Account._meta.db_table, Account._meta.db_table, count],
        )


def free_grants() -> dict[int, list[tuple[datetime, int]]]:
    grants: dict[int, list[tuple[datetime, int]]] = {}
    for account_id, start, amount in Grant.objects.filter(source=FREE).values_list(
        "account_id", "period_start", "amount"
    ):
        grants.setdefault(account_id, []).append((start, amount))
    return grants


def test_a_real_worker_grants_every_active_account_its_free_credits_once_over_several_chunks(
    start_worker, assert_ledger_clean
):
    now = timezone.now()
    active: list[Account] = []
    with transaction.atomic():
        # Id gaps of a whole chunk spread the accounts over several of the task's chunks, so the
        # real `refill_free_credits` fans out more than one chunk to the two pool processes.
        for cluster in range(4):
            if cluster:
                skip_account_ids(CHUNK_ACCOUNTS)
            active += [make_account(now=now, free=True) for _ in range(75)]
            if cluster == 2:
                suspended = make_account(now=now, free=True, status=Account.Status.SUSPENDED)
    ids = [account.pk for account in active] + [suspended.pk]
    expected_chunks = math.ceil((max(ids) - min(ids) + 1) / CHUNK_ACCOUNTS)
    assert expected_chunks >= 4

    worker = start_worker(concurrency=2)
    refill_free_credits.delay()
    run = wait_for_run(JobRun.Job.REFILL, worker)

    assert worker.received("billing.refill_free_credits") and worker.received("billing.run_job_chunk")
    grants = free_grants()
    for account in active:
        period = period_at(
            first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=run.as_of
        )
        assert period.index == 0
        assert grants.get(account.pk) == [(period.start, FIRST_PERIOD_CREDITS)], account.pk
    assert suspended.pk not in grants
    assert len(grants) == len(active)
    balances = dict(Account.objects.values_list("pk", "available_credits"))
    assert {balances[a.pk] for a in active} == {FIRST_PERIOD_CREDITS}
    assert balances[suspended.pk] == 0
    assert (run.chunks_total, run.chunks_done) == (expected_chunks, expected_chunks)
    assert (run.rows_done, run.credits_moved) == (len(active), len(active) * FIRST_PERIOD_CREDITS)
    assert list(run.chunks.values_list("status", flat=True).distinct()) == [JobChunk.Status.DONE]
    assert_ledger_clean()


@contextmanager
def accounts_locked_elsewhere(low: int, high: int) -> Iterator[int]:
    """Row-lock accounts [low, high] from a session of our own (not Django's) until the block
    ends, rolling back; yields that session's backend pid."""
    with psycopg.connect(this_database_url(), application_name="billing-itest-blocker") as blocker:
        try:
            blocker.execute("SELECT id FROM accounts_account WHERE id BETWEEN %s AND %s FOR UPDATE", [low, high])
            yield blocker.info.backend_pid
        finally:
            blocker.rollback()


def session_waiting_on(worker: CeleryWorker, blocker_pid: int) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
            " AND %s = ANY(pg_blocking_pids(pid))",
            [worker.app_name, blocker_pid],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def test_a_worker_killed_inside_a_chunk_leaves_whole_chunks_and_the_next_run_grants_exactly_once(
    start_worker, assert_ledger_clean
):
    now = timezone.now()
    with transaction.atomic():
        accounts = [make_account(now=now, free=True) for _ in range(2000)]
    ids = sorted(account.pk for account in accounts)
    # Queue the run's chunks (200 accounts each) before any worker is up, then block the upper
    # half of a middle chunk: the worker takes the locks of its lower half, then waits.
    call_command("run_job", "refill", "--queue", "--chunk-accounts", "200", stdout=StringIO())
    old_run = JobRun.objects.get(job=JobRun.Job.REFILL)
    chunks = list(old_run.chunks.order_by("first_account_id"))
    assert len(chunks) == 10
    target = chunks[len(chunks) // 2]
    middle = (target.first_account_id + target.last_account_id) // 2

    with accounts_locked_elsewhere(middle, target.last_account_id) as blocker_pid:
        worker = start_worker()
        wait_for(
            lambda: session_waiting_on(worker, blocker_pid),
            what="worker session waiting on the blocked accounts",
            timeout=RUN_SECONDS,
            worker=worker,
        )
        worker.kill()
    # The killed worker's session finishes its statement once the locks are free, then finds
    # its client gone: nothing of the chunk may be committed.
    wait_for(lambda: not sessions_named([worker.app_name]), what="end of the killed worker's session", timeout=15)

    granted = free_grants()
    chunks = list(old_run.chunks.order_by("first_account_id"))
    assert any(chunk.status == JobChunk.Status.DONE for chunk in chunks), "the worker was killed before any chunk"
    for chunk in chunks:
        in_range = {pk for pk in ids if chunk.first_account_id <= pk <= chunk.last_account_id}
        applied = in_range & granted.keys()
        if chunk.status == JobChunk.Status.DONE:
            assert applied == in_range, (
                f"{chunk} is done but only {len(applied)} of {len(in_range)} accounts got credits"
            )
        else:
            assert applied == set(), f"{chunk} is {chunk.status} but {len(applied)} accounts got credits"
    killed = next(chunk for chunk in chunks if chunk.pk == target.pk)
    killed_ids = {pk for pk in ids if killed.first_account_id <= pk <= killed.last_account_id}
    assert (killed.status, killed.rows_done, len(killed_ids)) == (JobChunk.Status.PENDING, 0, 200)
    assert {pk: [amount for _, amount in grants] for pk, grants in granted.items()} == dict.fromkeys(
        granted, [FIRST_PERIOD_CREDITS]
    )
    assert_ledger_clean()

    # A fresh worker, to which the old run is stale at once, finishes the job.
    worker = start_worker(env={"JOB_STALE_AFTER_SECONDS": "0"})
    refill_free_credits.delay()
    new_run = wait_for_run(JobRun.Job.REFILL, worker, after=old_run.pk)

    granted = free_grants()
    assert {pk: len(grants) for pk, grants in granted.items()} == dict.fromkeys(ids, 1)
    assert {amount for grants in granted.values() for _, amount in grants} == {FIRST_PERIOD_CREDITS}
    assert set(Account.objects.values_list("available_credits", flat=True)) == {FIRST_PERIOD_CREDITS}
    old_run.refresh_from_db()
    assert old_run.status == JobRun.Status.ABANDONED
    assert new_run.status == JobRun.Status.COMPLETED
    assert new_run.chunks_done == new_run.chunks_total
    assert new_run.rows_done >= len(killed_ids)
    assert old_run.rows_done + new_run.rows_done == len(ids)
    assert old_run.credits_moved + new_run.credits_moved == len(ids) * FIRST_PERIOD_CREDITS
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.GRANT).count() == len(ids)
    assert_ledger_clean()


def test_a_real_worker_releases_a_lapsed_hold_and_returns_its_credits(start_worker, assert_ledger_clean):
    now = timezone.now()
    account = make_account(now=now - timedelta(hours=2))
    give(account, 10, now=now - timedelta(hours=2))
    lapsed = hold_create(
        account=account, credits=4, expires_in=900, actor=SVC, reference="gen-1", now=now - timedelta(hours=1)
    )
    # Made in the same past moment: a later spend on the account would settle the lapsed hold itself.
    live = hold_create(
        account=account, credits=3, expires_in=86400, actor=SVC, reference="gen-2", now=now - timedelta(hours=1)
    )
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (3, 7)

    worker = start_worker()
    release_expired_holds.delay()
    run = wait_for_run(JobRun.Job.RELEASE_HOLDS, worker)

    assert worker.received("billing.release_expired_holds")
    lapsed.refresh_from_db()
    live.refresh_from_db()
    assert lapsed.status == Hold.Status.EXPIRED
    assert live.status == Hold.Status.PENDING
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (7, 3)
    releases = LedgerEntry.objects.filter(hold=lapsed, kind=LedgerEntry.Kind.RELEASE)
    assert sum(entry.credits for entry in releases) == 4
    assert (run.rows_done, run.credits_moved) == (1, 4)
    assert_ledger_clean()
