"""The scheduled jobs' chunks (refill, grant expiry, hold timeouts) racing spends, holds,
suspensions, operator grants and clawbacks, batch debits and each other over the same accounts,
with real threads against PostgreSQL (each its own connection). A chunk locks its accounts in
id order, as a batch does, so neither deadlocks the other however its items are ordered."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_suspend
from billing.errors import BillingError
from billing.models import Debit, Grant, Hold, JobRun, LedgerEntry
from billing.services.batch import BatchDebit, debits_create_batch
from billing.services.jobs import job_chunk_run, job_start, pending_chunk_ids
from billing.services.ledger import Actor, debit_create, grant_clawback, hold_capture, hold_create, hold_release
from tests.billing.factories import give, make_account
from tests.concurrency import run_concurrently
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SVC = Actor("service", "1")
STAFF = Actor("staff", "races")
ROUNDS = 4


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def one_chunk(job: str, now: datetime) -> int:
    run = job_start(job=job, now=now)
    assert run is not None
    (chunk_id,) = pending_chunk_ids(run)
    return chunk_id


def reverse_batch(accounts: list[Account], per_account: int, now: datetime) -> list[str | None]:
    """One credit per item, the accounts' items in descending id order (a chunk goes ascending)."""
    items = [
        BatchDebit(account=account.public_id, credits=1, reference=f"b{n}")
        for account in sorted(accounts, key=lambda a: -a.pk)
        for n in range(per_account)
    ]
    outcomes = debits_create_batch(items=items, actor=SVC, now=now)
    return [None if outcome.error is None else outcome.error.code for outcome in outcomes]


def balances_match_lots(accounts: list[Account]) -> None:
    for account in accounts:
        account.refresh_from_db()
        now_remaining = Grant.objects.filter(account=account).aggregate(t=Sum("remaining"))["t"] or 0
        assert account.available_credits + account.held_credits == now_remaining, account.public_id


# --- the refill -------------------------------------------------------------------------------


def test_a_refill_chunk_and_a_batch_over_its_accounts_in_reverse_order_grant_each_period_once(
    assert_ledger_clean,
):
    accounts = [make_account(now=utc(2027, 1, 1), free=True) for _ in range(8)]
    for account in accounts:
        give(account, 100, now=utc(2027, 1, 1))  # lasting credits the batch spends after each refill
    for month in range(2, 2 + ROUNDS):
        moment = utc(2027, month, 1, 5)
        chunk_id = one_chunk(JobRun.Job.REFILL, moment)

        def work(index: int, chunk_id: int = chunk_id, moment: datetime = moment) -> object:
            if index == 0:
                return job_chunk_run(chunk_id=chunk_id)
            return reverse_batch(accounts, 2, moment)

        _, refusals = run_concurrently(2, work)
        assert refusals == [None] * 16
        for account in accounts:
            # The period's grant exactly once, whether the chunk or the batch's settling made it.
            assert Grant.objects.filter(account=account, period_start=utc(2027, month, 1)).count() == 1
    assert Debit.objects.count() == 16 * ROUNDS
    balances_match_lots(accounts)
    assert_ledger_clean()


def test_two_runs_of_the_refill_at_once_over_the_same_accounts_grant_each_period_once(settings, assert_ledger_clean):
    accounts = [make_account(now=utc(2027, 1, 1), free=True) for _ in range(12)]
    settings.JOB_STALE_AFTER_SECONDS = 0  # the second start takes the first run for a dead one
    for month in range(2, 2 + ROUNDS):
        moment = utc(2027, month, 1, 5)
        first = pending_chunk_ids(job_start(job=JobRun.Job.REFILL, now=moment, chunk_accounts=5))
        second = pending_chunk_ids(job_start(job=JobRun.Job.REFILL, now=moment, chunk_accounts=7))
        chunks = first + second[::-1]

        def work(index: int, chunks: list[int] = chunks) -> object:
            return job_chunk_run(chunk_id=chunks[index])

        results = run_concurrently(len(chunks), work)
        assert sum(result.rows for result in results if result is not None) == len(accounts)
        for account in accounts:
            assert Grant.objects.filter(account=account, period_start=utc(2027, month, 1)).count() == 1
    assert LedgerEntry.objects.filter(kind="grant").count() == len(accounts) * ROUNDS  # nothing settled them in January
    assert_ledger_clean()


def test_a_refill_chunk_racing_suspensions_grants_only_the_accounts_active_when_it_reached_them(
    assert_ledger_clean,
):
    accounts = [make_account(now=utc(2027, 1, 1), free=True) for _ in range(10)]
    moment = utc(2027, 2, 1, 5)
    chunk_id = one_chunk(JobRun.Job.REFILL, moment)

    def work(index: int) -> object:
        if index == 0:
            return job_chunk_run(chunk_id=chunk_id)
        for account in accounts[index - 1 :: 2]:
            account_suspend(account_id=account.pk, reason="policy")
        return None

    run_concurrently(3, work)
    assert Account.objects.filter(status=Account.Status.SUSPENDED).count() == 10
    for account in accounts:
        account.refresh_from_db()
        grants = Grant.objects.filter(account=account, period_start=utc(2027, 2, 1)).count()
        # Granted once if the chunk reached it before its suspension, else not at all (and not owed).
        assert grants == (1 if account.free_period_start == utc(2027, 2, 1) else 0)
    balances_match_lots(accounts)
    assert_ledger_clean()


# --- grant expiry -----------------------------------------------------------------------------


def accounts_with_a_lapsing_lot(count: int, start: datetime, lapses: datetime) -> list[Account]:
    accounts = [make_account(now=start) for _ in range(count)]
    for account in accounts:
        give(account, 10, expires_at=lapses, now=start)
        give(account, 100, now=start)
        debit_create(account=account, credits=3, actor=SVC, now=start)
    return accounts


def test_an_expiry_chunk_racing_batches_in_reverse_order_debits_and_holds_expires_each_lot_once(
    assert_ledger_clean,
):
    for round_ in range(ROUNDS):
        _expiry_racing_spends(lapses=utc(2027, 1, 11 + round_))
    assert_ledger_clean()


def _expiry_racing_spends(*, lapses: datetime) -> None:
    accounts = accounts_with_a_lapsing_lot(6, utc(2027, 1, 1), lapses)
    moment = lapses + timedelta(hours=1)
    chunk_id = one_chunk(JobRun.Job.EXPIRE_GRANTS, moment)

    def work(index: int) -> object:
        if index == 0:
            return job_chunk_run(chunk_id=chunk_id)
        if index == 1:
            return reverse_batch(accounts, 2, moment)
        for account in accounts[::-1]:
            hold = hold_create(account=account, credits=2, expires_in=900, actor=SVC, now=moment)
            debit_create(account=account, credits=1, actor=SVC, now=moment)
            (hold_capture if index == 2 else hold_release)(hold=hold, actor=SVC, now=moment)
        return None

    run_concurrently(4, work)
    for account in accounts:
        account.refresh_from_db()
        # 100 + 10 - 3 spent - 7 expired - 2 batch - 2 debits - 2 captured.
        assert (account.available_credits, account.held_credits) == (100 - 6, 0)
        assert LedgerEntry.objects.filter(account=account, kind="expire").get().credits == -7


def test_two_expiry_runs_at_once_and_operator_clawbacks_expire_each_lot_once(settings, assert_ledger_clean):
    start = utc(2027, 1, 1)
    lapses = start + timedelta(days=10)
    accounts = accounts_with_a_lapsing_lot(10, start, lapses)
    lasting = {account.pk: Grant.objects.get(account=account, expires_at__isnull=True) for account in accounts}
    moment = lapses + timedelta(hours=1)
    settings.JOB_STALE_AFTER_SECONDS = 0
    first = pending_chunk_ids(job_start(job=JobRun.Job.EXPIRE_GRANTS, now=moment, chunk_accounts=4))
    second = pending_chunk_ids(job_start(job=JobRun.Job.EXPIRE_GRANTS, now=moment, chunk_accounts=3))
    chunks = first + second[::-1]

    def work(index: int) -> object:
        if index < len(chunks):
            return job_chunk_run(chunk_id=chunks[index])
        for account in accounts[::-1]:
            grant_clawback(grant=lasting[account.pk], credits=5, actor=STAFF, now=moment)
            give(account, 4, now=moment)
        return None

    run_concurrently(len(chunks) + 1, work)
    for account in accounts:
        account.refresh_from_db()
        assert account.available_credits == 100 + 10 - 3 - 7 - 5 + 4
        assert LedgerEntry.objects.filter(account=account, kind="expire").get().credits == -7
    assert_ledger_clean()


# --- hold timeouts ----------------------------------------------------------------------------


def test_a_hold_timeout_chunk_racing_captures_releases_and_suspension_settles_each_hold_once(
    assert_ledger_clean,
):
    for round_ in range(ROUNDS):
        _hold_timeouts_racing_captures(start=utc(2027, 1, 1 + round_))
    assert_ledger_clean()


def _hold_timeouts_racing_captures(*, start: datetime) -> None:
    accounts = [make_account(now=start) for _ in range(6)]
    lapsing, lasting = [], []
    for account in accounts:
        give(account, 20, now=start)
        lapsing.append(hold_create(account=account, credits=4, expires_in=900, actor=SVC, now=start))
        lasting.append(hold_create(account=account, credits=3, expires_in=7200, actor=SVC, now=start))
    moment = start + timedelta(minutes=30)
    chunk_id = one_chunk(JobRun.Job.RELEASE_HOLDS, moment)
    lapsed_answers: list[str] = []

    def work(index: int) -> object:
        if index == 0:
            return job_chunk_run(chunk_id=chunk_id)
        if index == 1:
            for account in accounts[::-1]:
                account_suspend(account_id=account.pk, reason="policy")
            return None
        for n in range(len(accounts))[::-1]:
            try:  # a lapsed hold: released by whichever settles the account first
                lapsed_answers.append(hold_capture(hold=lapsing[n], actor=SVC, now=moment).status)
            except BillingError as exc:
                lapsed_answers.append(exc.code)
            if n % 2:
                hold_capture(hold=lasting[n], credits=2, actor=SVC, now=moment)
            else:
                hold_release(hold=lasting[n], actor=SVC, now=moment)
        return None

    run_concurrently(3, work)
    assert len(lapsed_answers) == 6 and set(lapsed_answers) <= {"expired", "hold_expired"}
    assert Hold.objects.filter(pk__in=[h.pk for h in lapsing], status="expired").count() == 6
    for n, account in enumerate(accounts):
        account.refresh_from_db()
        assert account.status == Account.Status.SUSPENDED
        assert (account.available_credits, account.held_credits) == (18 if n % 2 else 20, 0)


# --- a chunk and a batch forced to queue behind each other ------------------------------------


def _accounts_with_work_due(job: str, now: datetime) -> list[Account]:
    """Five accounts each with work for `job` at `now`, and 50 lasting credits to spend."""
    earlier = now - timedelta(days=40)
    accounts = [make_account(now=earlier, free=job == JobRun.Job.REFILL) for _ in range(5)]
    for account in accounts:
        give(account, 50, now=earlier)  # settles the refill's accounts into their first period
        if job == JobRun.Job.EXPIRE_GRANTS:
            give(account, 7, expires_at=now - timedelta(minutes=1), now=earlier)
        elif job == JobRun.Job.RELEASE_HOLDS:
            hold_create(account=account, credits=7, expires_in=900, actor=SVC, now=now - timedelta(hours=1))
    return accounts


def _wait_for_lock_waiters(count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} backends queued behind a lock")


@pytest.mark.parametrize("job", [JobRun.Job.REFILL, JobRun.Job.EXPIRE_GRANTS, JobRun.Job.RELEASE_HOLDS])
def test_a_chunk_and_a_batch_in_reverse_order_queued_behind_a_middle_account_do_not_deadlock(
    job, service_key, assert_ledger_clean
):
    """The middle account is held while the chunk (ascending ids) and the batch route (items in
    descending ids) start: each takes the accounts before it, then both queue. Taken in any other
    order, they would then hold what the other waits for."""
    now = timezone.now()
    accounts = _accounts_with_work_due(job, now)
    chunk_id = one_chunk(job, now)
    middle = sorted(accounts, key=lambda a: a.pk)[2]
    items = [
        {"account_id": a.public_id, "credits": 1, "reference": "r", "idempotency_key": f"k{a.pk}-{n}"}
        for a in sorted(accounts, key=lambda a: -a.pk)
        for n in range(2)
    ]

    def work(index: int) -> object:
        if index == 0:
            with transaction.atomic():
                Account.objects.select_for_update().filter(pk=middle.pk).first()
                _wait_for_lock_waiters(2)
            return None
        time.sleep(0.2)  # the middle account is taken by now
        if index == 1:
            return job_chunk_run(chunk_id=chunk_id)
        response = Api(service_key).post("/debits/batch", {"debits": items})
        return response.status_code, [result["status"] for result in response.json()["results"]]

    _, chunk, batch = run_concurrently(3, work)
    assert chunk is not None and chunk.rows == 5
    assert batch == (200, [201] * 10)
    for account in accounts:
        account.refresh_from_db()
        assert account.held_credits == 0
        assert account.available_credits == 50 - 2 + (15 if job == JobRun.Job.REFILL else 0)
    assert_ledger_clean()
