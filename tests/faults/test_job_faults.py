"""A real Celery worker SIGKILLed, pool and all, in the middle of each chunked job (the free
refill, grant expiry, hold timeouts), on a private PostgreSQL and Redis with the production
settings (`make test-faults`).

Each test makes a few thousand items of due work through the services, starts an operator's run
in small chunks (`manage.py run_job JOB --queue --chunk-accounts N`) for a `celery -A config
worker`, and kills the worker's process group once some but not all chunks are done. Then, as
README.md documents the recovery: a new worker takes the chunks still queued, and the job's
beat task, sent until a run starts, abandons the stalled run (JOB_STALE_AFTER_SECONDS, shortened
here) and redoes whatever it left. Last, the messages the dead worker took and never
acknowledged come back, as the broker gives them back once its visibility timeout passes (an
hour; kombu's own restore of each message here), and must move nothing. A message the worker had
taken from the queue but not yet recorded as unacknowledged dies with it; its chunk stays undone
in the abandoned run, whose work the next run did.

After the kill, every item is either done by a chunk marked done or untouched (a chunk is all or
nothing); at the end every item is done exactly once (one grant for the period, one `expire`
entry per lot, one `release` per hold) and check_ledger passes. Figures go to
tests/artifacts/faults.txt."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from tests.faults.harness import check_ledger, environment, manage, report
from tests.faults.jobs_harness import (
    EMAIL_DOMAIN,
    CeleryWorker,
    RunState,
    broker_backlog,
    done_chunk_rows,
    queue_run,
    redeliver_unacknowledged,
    run_state,
    runs_after,
    scalar,
    seed,
    send_task,
    unacknowledged_chunks,
    wait_until,
)
from tests.private_servers import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

STALE_AFTER_SECONDS = 3
RUN_SECONDS = 90


@dataclass(frozen=True)
class JobCase:
    """A job, how much due work to make for it, and the state of each due item: `pending` before
    the job touched it, `done` once it did, exactly once (`query` gives one row per item)."""

    job: str
    task: str
    accounts: int
    chunk_accounts: int
    query: str
    pending: tuple
    done: tuple

    def states(self, db: psycopg.Connection) -> Counter[tuple]:
        return Counter(tuple(row) for row in db.execute(self.query, [f"{self.job}-%@{EMAIL_DOMAIN}"]))


# Per account due a refill: its free grants for the first period (50 credits, DESIGN.md), all its
# lots, its `grant` entries, its balance.
REFILL = JobCase(
    job="refill",
    task="billing.refill_free_credits",
    accounts=3000,
    chunk_accounts=15,
    query="""
        SELECT (SELECT count(*) FROM billing_grant g WHERE g.account_id = a.id AND g.source = 'free_monthly'
                  AND g.period_start = a.first_period_start AND g.amount = 50),
               (SELECT count(*) FROM billing_grant g WHERE g.account_id = a.id),
               (SELECT count(*) FROM billing_ledgerentry e WHERE e.account_id = a.id AND e.kind = 'grant'),
               a.available_credits
        FROM accounts_account a JOIN accounts_user u ON u.id = a.user_id WHERE u.email LIKE %s
    """,
    pending=(0, 0, 0, 0),
    done=(1, 1, 1, 50),
)

# Per lapsed lot (5 or 4 credits): emptied, its `expire` entries and whether they took exactly
# what it had; its account's balance (the 3 credits of its live lot once both lapsed ones went).
EXPIRY = JobCase(
    job="expire_grants",
    task="billing.expire_grants",
    accounts=1200,
    chunk_accounts=6,
    query="""
        SELECT g.remaining = 0, count(e.id), COALESCE(sum(e.credits), 0) + g.amount = 0, a.available_credits
        FROM billing_grant g JOIN accounts_account a ON a.id = g.account_id JOIN accounts_user u ON u.id = a.user_id
        LEFT JOIN billing_ledgerentry e ON e.grant_id = g.id AND e.kind = 'expire'
        WHERE u.email LIKE %s AND g.reason = 'faults lapsing'
        GROUP BY g.id, a.id
    """,
    pending=(False, 0, False, 12),
    done=(True, 1, True, 3),
)

# Per lapsed hold (4 credits, next to a live hold of 3 on 10): its status, its `release` entries
# and what they gave back; its account's available and held credits.
HOLDS = JobCase(
    job="release_holds",
    task="billing.release_expired_holds",
    accounts=1200,
    chunk_accounts=6,
    query="""
        SELECT h.status, count(e.id), COALESCE(sum(e.credits), 0)::bigint, a.available_credits, a.held_credits
        FROM billing_hold h JOIN accounts_account a ON a.id = h.account_id JOIN accounts_user u ON u.id = a.user_id
        LEFT JOIN billing_ledgerentry e ON e.hold_id = h.id AND e.kind = 'release'
        WHERE u.email LIKE %s AND h.reference LIKE 'faults-lapsing-%%'
        GROUP BY h.id, a.id
    """,
    pending=("pending", 0, 0, 3, 7),
    done=("expired", 1, 4, 7, 3),
)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[dict[str, str], PrivateRedis]]:
    postgres, broker = PrivatePostgres(), PrivateRedis()
    postgres.start()
    broker.start()
    try:
        env = environment(postgres, broker)
        done = manage(env, "migrate", "--noinput", check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        yield env, broker
    finally:
        broker.stop()
        postgres.destroy()


@pytest.fixture
def pg(servers) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    env, _ = servers
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:
        yield connection


@pytest.fixture
def workers() -> Iterator[list[CeleryWorker]]:
    started: list[CeleryWorker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.mark.parametrize("case", [REFILL, EXPIRY, HOLDS], ids=lambda case: case.job)
def test_a_worker_sigkilled_mid_run_leaves_whole_chunks_and_the_job_finishes_exactly_once(
    servers, pg, workers, tmp_path, case
):
    env, broker = servers
    redis.Redis.from_url(broker.url).flushdb()
    seed(env, case.job, case.accounts)
    scenario = Scenario(case, env, broker.url, pg, tmp_path, workers, due=sum(case.states(pg).values()))
    assert case.states(pg) == {case.pending: scenario.due} and scenario.due >= case.accounts

    scenario.kill_mid_run()
    later = scenario.resume()
    assert case.states(pg) == {case.done: scenario.due}, case.states(pg)
    scenario.redeliver()

    assert case.states(pg) == {case.done: scenario.due}, case.states(pg)
    # Across the runs, each item was counted once: by the killed run's chunks or by the next run.
    assert run_state(pg, scenario.first).rows_done + sum(run.rows_done for run in later) == scenario.due
    scenario.figures.append(f"after: {dict(case.states(pg))}; check_ledger: {check_ledger(env)}")
    report(f"Celery worker SIGKILLed mid-run, {case.job}: " + "; ".join(scenario.figures))


@dataclass
class Scenario:
    case: JobCase
    env: dict[str, str]
    broker_url: str
    db: psycopg.Connection
    logs: Path
    workers: list[CeleryWorker]
    due: int
    first: int = 0  # the run killed
    lost: int = 0  # messages the killed worker took and never acknowledged
    lost_chunks: list[int] = field(default_factory=list)  # the chunks of those messages
    figures: list[str] = field(default_factory=list)

    def kill_mid_run(self) -> None:
        """A run in small chunks, its worker killed with some chunks done and some not; then
        exactly the items of the chunks marked done are done (a chunk is all or nothing)."""
        worker = CeleryWorker.start(self.env, self.logs / "worker-1.log")
        self.workers.append(worker)
        self.first = queue_run(self.env, self.case.job, self.case.chunk_accounts)
        total = run_state(self.db, self.first).chunks_total
        wait_until(lambda: run_state(self.db, self.first).chunks_done >= total // 5, "chunks done", worker=worker)
        worker.kill()
        worker.wait_sessions_gone(self.db)
        cut = run_state(self.db, self.first)
        queued, self.lost = broker_backlog(self.broker_url)
        self.lost_chunks = unacknowledged_chunks(self.broker_url)
        assert len(self.lost_chunks) == self.lost
        assert 0 < cut.chunks_done < total, f"the kill came after {cut.chunks_done} of {total} chunks"
        done = done_chunk_rows(self.db, self.first)
        assert done == cut.rows_done
        assert (
            self.case.states(self.db) == Counter({self.case.pending: self.due - done, self.case.done: done}) - Counter()
        )
        self.figures += [
            f"{self.due} due ({self.case.accounts} accounts)",
            f"run {self.first} in {total} chunks of {self.case.chunk_accounts} accounts, {cut.chunks_done} done "
            f"({done} rows) when killed, {queued} messages queued and {self.lost} taken unacknowledged then",
        ]

    def resume(self) -> list[RunState]:
        """A new worker takes what is still queued; the job's beat task, sent whenever the broker
        is idle until a run starts, abandons the stalled run and redoes what it left."""
        worker = CeleryWorker.start(
            {**self.env, "JOB_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS)}, self.logs / "worker-2.log"
        )
        self.workers.append(worker)

        def idle() -> bool:
            return broker_backlog(self.broker_url) == (0, self.lost)

        deadline = time.monotonic() + RUN_SECONDS
        while not any(run.status == "completed" for run in runs_after(self.db, self.case.job, self.first)):
            assert time.monotonic() < deadline, f"no run after run {self.first} completed\n{worker.tail()}"
            wait_until(idle, "idle broker", worker=worker)
            if not runs_after(self.db, self.case.job, self.first):
                send_task(self.broker_url, self.case.task)
            time.sleep(0.5)

        def finished() -> bool:  # a second beat task, sent while the first was in flight, may start a run
            return idle() and all(run.status == "completed" for run in runs_after(self.db, self.case.job, self.first))

        wait_until(finished, "idle broker and every later run completed", worker=worker)
        later = runs_after(self.db, self.case.job, self.first)
        killed = run_state(self.db, self.first)
        # Left with chunks never done, the killed run can only have been abandoned.
        assert killed.status == ("completed" if killed.chunks_done == killed.chunks_total else "abandoned"), killed
        runs = ", ".join(f"{run.pk}: {run.rows_done} rows" for run in later)
        self.figures.append(f"{killed.chunks_done} chunks done and run {killed.status} when the next ({runs}) finished")
        return later

    def redeliver(self) -> None:
        """The dead worker's unacknowledged messages come back (as after the visibility timeout):
        their chunks are done now, and move nothing. (A message the dead worker had already taken
        from the queue but not yet recorded as unacknowledged, still in its socket, is lost with
        it: its chunk stays undone in the abandoned run, whose accounts the next run did.)"""
        done_before = set(chunk_ids_done(self.db, self.first))
        expected = set(self.lost_chunks) - done_before
        assert redeliver_unacknowledged(self.broker_url) == self.lost

        # An empty queue and no unacknowledged message is not enough: a worker has popped a
        # message from the queue a moment before it records it as unacknowledged.
        def settled() -> bool:
            idle = broker_backlog(self.broker_url) == (0, 0)
            return idle and expected <= set(chunk_ids_done(self.db, self.first))

        wait_until(settled, "redelivered chunks done and an idle broker", worker=self.workers[-1])
        newly_done = set(chunk_ids_done(self.db, self.first)) - done_before
        assert newly_done == expected
        late = scalar(
            self.db,
            "SELECT COALESCE(sum(rows_done), 0) FROM billing_jobchunk WHERE id = ANY(%s)",
            [sorted(newly_done)],
        )
        assert late == 0
        never = run_state(self.db, self.first).chunks_total - len(done_before) - len(newly_done)
        self.figures.append(
            f"{self.lost} redelivered, {len(newly_done)} of them chunks not yet done: {late} rows; "
            f"{never} chunks whose message was lost in flight stay undone"
        )


def chunk_ids_done(db: psycopg.Connection, run: int) -> list[int]:
    query = "SELECT id FROM billing_jobchunk WHERE run_id = %s AND status = 'done'"
    return [row[0] for row in db.execute(query, [run])]
