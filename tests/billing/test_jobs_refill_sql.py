"""The refill's set-based statement (billing/services/job_sql.py) on PostgreSQL: what it writes
for each account, how it meets a concurrent lazy grant, and how a chunk commits."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from accounts.models import Account
from billing.models import Grant, JobRun, LedgerEntry
from billing.services import job_sql
from billing.services.jobs import job_chunk_run, job_run_inline, job_start, pending_chunk_ids
from billing.services.ledger import Actor, debit_create, free_grant_ensure, hold_create
from tests.billing.factories import give, make_account
from tests.billing.period_oracle import period_at

pytestmark = pytest.mark.django_db
SVC = Actor("service", "1")
REFILL = JobRun.Job.REFILL


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_each_refill_entry_is_its_own_accounts_new_grant_with_the_running_balance(assert_ledger_clean):
    assert connection.vendor == "postgresql"
    accounts = [make_account(now=utc(2027, 3, day), free=True) for day in (3, 1, 2, 5)]
    job_run_inline(job=REFILL, now=utc(2027, 3, 6))
    # Different balances before the second period: paid credits, a spend and a pending hold.
    give(accounts[0], 7)
    debit_create(account=accounts[1], credits=20, actor=SVC, now=utc(2027, 3, 7))
    hold_create(account=accounts[2], credits=4, expires_in=86400, actor=SVC, now=utc(2027, 3, 7))
    before = {a.pk: Account.objects.values_list("available_credits", "held_credits").get(pk=a.pk) for a in accounts}

    moment = utc(2027, 4, 5, 12, 30)
    assert job_run_inline(job=REFILL, now=moment, size=3).rows == 4

    for account in accounts:
        period = period_at(
            first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=moment
        )
        grant = Grant.objects.get(account=account, period_start=period.start)
        entry = LedgerEntry.objects.get(grant=grant)
        available, held = before[account.pk]
        assert (entry.account_id, entry.kind, entry.credits) == (account.pk, "grant", grant.amount)
        assert (entry.balance_after, entry.held_after) == (available + grant.amount, held)
        assert (grant.amount, grant.remaining, grant.reason) == (15, 15, "free credits, period 1")
        account.refresh_from_db()
        assert (account.available_credits, account.free_period_start) == (entry.balance_after, period.start)
    assert_ledger_clean()


def test_an_account_whose_period_grant_exists_already_is_left_alone_and_its_chunk_goes_on():
    """A free grant newer than the period the account records breaks the ledger (check_ledger
    reports it); the refill neither grants that period again nor credits the account for it."""
    accounts = [make_account(now=utc(2027, 3, 1), free=True) for _ in range(3)]
    odd = accounts[1]
    period = period_at(first_period_start=odd.first_period_start, anchor_day=odd.period_anchor_day, now=utc(2027, 3, 2))
    Grant.objects.create(
        account=odd, source="free_monthly", amount=50, remaining=0, expires_at=period.end, period_start=period.start
    )

    assert job_run_inline(job=REFILL, now=utc(2027, 3, 2)).rows == 2

    odd.refresh_from_db()
    assert (odd.available_credits, odd.free_period_start) == (0, None)
    assert Grant.objects.filter(account=odd).count() == 1
    for account in (accounts[0], accounts[2]):
        account.refresh_from_db()
        assert account.available_credits == 50


@pytest.mark.django_db(transaction=True)
def test_a_chunk_commits_without_waiting_for_the_wal_flush_and_only_that_transaction(monkeypatch):
    make_account(now=utc(2027, 3, 1), free=True)
    seen: list[str] = []
    refill_range = job_sql.refill_range

    def spy(params: dict) -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            seen.append(cursor.fetchone()[0])
        return refill_range(params)

    monkeypatch.setattr(job_sql, "refill_range", spy)
    run = job_start(job=REFILL, now=utc(2027, 3, 2))
    assert run is not None
    for chunk_id in pending_chunk_ids(run):
        job_chunk_run(chunk_id=chunk_id)

    assert seen == ["off"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def _two(kind: str) -> list:
    if kind == "account":
        return [make_account(now=utc(2027, 3, 1)) for _ in range(2)]
    account = make_account(now=utc(2027, 3, 1))
    give(account, 10)
    if kind == "debit":
        return [debit_create(account=account, credits=1, actor=SVC) for _ in range(2)]
    return [hold_create(account=account, credits=1, expires_in=600, actor=SVC) for _ in range(2)]


@pytest.mark.parametrize("kind", ["account", "debit", "hold"])
def test_public_ids_stay_unique_without_a_pattern_ops_index(kind):
    first, second = _two(kind)
    model = type(first)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [model._meta.db_table])
        definitions = [row[0] for row in cursor.fetchall()]
    assert not [d for d in definitions if "pattern_ops" in d], definitions
    assert [d for d in definitions if d.startswith("CREATE UNIQUE INDEX") and d.endswith("(public_id)")], definitions

    with pytest.raises(IntegrityError), transaction.atomic():
        model.objects.filter(pk=second.pk).update(public_id=first.public_id)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_job_waits_for_a_lazy_grant_under_the_account_lock_and_grants_the_period_once(assert_ledger_clean):
    contended = make_account(now=utc(2027, 3, 1), free=True)
    other = make_account(now=utc(2027, 3, 1), free=True)
    job_run_inline(job=REFILL, now=utc(2027, 3, 2))
    moment = utc(2027, 4, 1, 5)
    lazy_granted, let_commit = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def lazy() -> None:
        try:
            with transaction.atomic():
                results["lazy"] = free_grant_ensure(account=contended, actor=SVC, now=moment)
                lazy_granted.set()
                let_commit.wait(60)  # holding the account lock until the job waits for it
        finally:
            connection.close()

    def job() -> None:
        try:
            results["job"] = job_run_inline(job=REFILL, now=moment).rows
        finally:
            connection.close()

    threads = [threading.Thread(target=lazy, daemon=True), threading.Thread(target=job, daemon=True)]
    threads[0].start()
    assert lazy_granted.wait(30)
    threads[1].start()
    try:
        _wait_for_a_lock_wait_on("accounts_account")
    finally:
        let_commit.set()
        for thread in threads:
            thread.join(60)

    assert results["lazy"] is not None
    assert results["job"] == 1  # only the other account: the contended one was granted lazily
    for account in (contended, other):
        period = period_at(
            first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=moment
        )
        assert Grant.objects.filter(account=account, period_start=period.start).count() == 1
    assert_ledger_clean()


def _wait_for_a_lock_wait_on(table: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE %s",
                [f"%UPDATE {table}%"],
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError(f"no backend waited for a lock on {table}")


def test_the_refill_locks_its_accounts_in_id_order_even_where_a_sequential_scan_looks_cheaper():
    for _ in range(3):
        make_account(free=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_account")
    params = job_sql.refill_params(
        low=0, high=2**62, now=utc(2027, 3, 1), first_credits=50, later_credits=15, actor_id="test"
    )

    def scan_of_accounts(settings: str) -> str:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(settings)
            cursor.execute("EXPLAIN " + job_sql._REFILL, params)
            plan = [row[0] for row in cursor.fetchall()]
        return next(line.split("->")[-1].strip() for line in plan if "on accounts_account" in line and "Scan" in line)

    # The whole id range of a small table, where a sequential scan (physical order) costs least:
    # with a chunk's settings the plan walks the primary key, in id order. (Which scan the
    # planner picks without them depends on the statistics of the moment, so it is not asserted.)
    assert scan_of_accounts(job_sql._NO_JIT_ID_ORDER).startswith("Index Scan using accounts_account_pkey")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(job_sql._NO_JIT_ID_ORDER)
        cursor.execute("SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan')")
        assert cursor.fetchone() == ("off", "off")


# --- the foreign-key checks the refill statement makes needless ---------------------------------

_ORPHAN_GRANT = (
    "INSERT INTO billing_grant (account_id, source, amount, remaining, priority, reason, created_at) "
    "VALUES (-1, 'adjustment', 1, 1, 10, 'no such account', now()) RETURNING 1, 1"
)


def _run_then_check_references() -> None:
    """refill_range, then the deferred foreign-key checks queued by then, at once."""
    job_sql.refill_range({})
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_the_refill_statement_alone_runs_without_the_foreign_key_triggers(monkeypatch, settings):
    """Proved with a statement whose row names no account: with the checks skipped it goes in
    (nothing was queued to check), and the mode is back to normal for what follows it."""
    monkeypatch.setattr(job_sql, "_REFILL", _ORPHAN_GRANT)
    assert job_sql.refill_skips_foreign_key_checks()
    with transaction.atomic():
        _run_then_check_references()
        with connection.cursor() as cursor:
            cursor.execute("SHOW session_replication_role")
            assert cursor.fetchone()[0] == "origin"
            with pytest.raises(IntegrityError), transaction.atomic():
                cursor.execute(_ORPHAN_GRANT)  # the same row after the refill statement is checked
        transaction.set_rollback(True)

    settings.REFILL_SKIP_FOREIGN_KEY_CHECKS = False
    assert not job_sql.refill_skips_foreign_key_checks()
    with pytest.raises(IntegrityError), transaction.atomic():
        _run_then_check_references()


def test_the_checks_stay_on_for_a_role_that_may_not_skip_them_or_tables_with_triggers():
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("CREATE ROLE billing_test_plain_role NOLOGIN")
            cursor.execute("GRANT SELECT ON billing_grant TO billing_test_plain_role")
            cursor.execute("SET LOCAL ROLE billing_test_plain_role")
        assert not job_sql.refill_skips_foreign_key_checks()
        transaction.set_rollback(True)
    assert job_sql.refill_skips_foreign_key_checks()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE FUNCTION billing_test_noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"
            )
            cursor.execute(
                "CREATE TRIGGER billing_test_audit AFTER INSERT ON billing_ledgerentry "
                "FOR EACH ROW EXECUTE FUNCTION billing_test_noop()"
            )
        assert not job_sql.refill_skips_foreign_key_checks()
        transaction.set_rollback(True)
    assert job_sql.refill_skips_foreign_key_checks()


def test_the_refill_writes_the_same_rows_with_and_without_the_checks(settings, assert_ledger_clean):
    made = {}
    for skip in (True, False):
        settings.REFILL_SKIP_FOREIGN_KEY_CHECKS = skip
        assert job_sql.refill_skips_foreign_key_checks() is skip
        accounts = [make_account(now=utc(2027, 3, day), free=True) for day in (1, 2, 30)]
        job_run_inline(job=REFILL, now=utc(2027, 3, 31))
        job_run_inline(job=REFILL, now=utc(2027, 4, 30), size=2)
        made[skip] = [
            list(
                LedgerEntry.objects.filter(account=account)
                .order_by("id")
                .values_list("kind", "credits", "balance_after", "grant__amount", "grant__period_start")
            )
            for account in accounts
        ]
    assert made[True] == made[False] and all(len(rows) == 2 for rows in made[True])
    assert_ledger_clean()
