"""Chunked, fanned-out jobs over all accounts: the monthly refill, grant expiry, hold timeouts.

A run splits the account-id space into ranges (chunks). Each chunk is one transaction that
takes the account locks first (in id order, as every writer does), then moves credits for the
whole range in a couple of set-based SQL statements. A chunk is all or nothing: a worker killed
mid-chunk leaves nothing of it, and the next run, which rescans every account, finishes it
exactly once. The work itself is idempotent (the account records its latest free period, and a
unique constraint on (account, period_start) backs that up), so a duplicated chunk is a no-op.

"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Min, QuerySet
from django.utils import timezone

from accounts.models import Account
from billing.models import Grant, Hold, JobChunk, JobRun
from billing.policy import policy_get
from billing.selectors import lapsed
from billing.services import job_sql

logger = logging.getLogger(__name__)

CHUNK_ACCOUNTS = 10_000

ACTORS: dict[str, str] = {
    JobRun.Job.REFILL: "free_refill",
    JobRun.Job.EXPIRE_GRANTS: "grant_expiry",
    JobRun.Job.RELEASE_HOLDS: "hold_timeouts",
}


@dataclass(frozen=True)
class ChunkResult:
    rows: int
    credits: int


def job_start(*, job: str, now: datetime | None = None, chunk_accounts: int = CHUNK_ACCOUNTS) -> JobRun | None:
    """Open a run and its chunks; None when a run of this job is already under way."""
    now = now or timezone.now()
    started = timezone.now()
    with transaction.atomic():
        # Serialise starts of the same job: two beats or a manual start cannot both fan out.
        _lock_job(job)
        running = JobRun.objects.filter(job=job, status=JobRun.Status.RUNNING)
        # A run whose chunks stopped completing was cut short (its workers died or its tasks
        # were lost): it is abandoned, and this run redoes whatever it left undone.
        stale_before = started - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS)
        running.filter(progressed_at__lt=stale_before).update(status=JobRun.Status.ABANDONED)
        if running.exists():
            return None
        run = JobRun.objects.create(job=job, as_of=now, started_at=started, progressed_at=started)
        chunks = _chunks(run, chunk_accounts)
        JobChunk.objects.bulk_create(chunks)
        run.chunks_total = len(chunks)
        if not chunks:
            run.status, run.finished_at = JobRun.Status.COMPLETED, timezone.now()
        run.save(update_fields=["chunks_total", "status", "finished_at"])
    return run


def _lock_job(job: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"billing.job.{job}"])


def _chunks(run: JobRun, size: int) -> list[JobChunk]:
    return [
        JobChunk(run=run, first_account_id=low, last_account_id=high)
        for low, high in account_ranges(job=run.job, now=run.as_of, size=size)
    ]


def account_ranges(*, job: str, now: datetime, size: int) -> Iterator[tuple[int, int]]:
    """Inclusive account-id ranges covering every account the job may have work for.

    The refill covers all accounts in ranges of `size` ids. Expiry and hold timeouts read
    the few accounts that are due from their partial indexes and group those, `size` accounts
    to a range; ids stream from the database, so memory stays flat however many there are.
    """
    if job == JobRun.Job.REFILL:
        bounds = Account.objects.aggregate(low=Min("id"), high=Max("id"))
        if bounds["low"] is not None:
            for low in range(bounds["low"], bounds["high"] + 1, size):
                yield low, min(low + size - 1, bounds["high"])
        return
    ids = _due(job, now).order_by("account_id").values_list("account_id", flat=True).distinct()
    group: list[int] = []
    for account_id in ids.iterator(chunk_size=size):
        group.append(account_id)
        if len(group) == size:
            yield group[0], group[-1]
            group = []
    if group:
        yield group[0], group[-1]


def _due(job: str, now: datetime) -> QuerySet:
    if job == JobRun.Job.EXPIRE_GRANTS:
        return Grant.objects.alias(lapsed=lapsed(now)).filter(spendable=True, lapsed=True)
    return Hold.objects.alias(lapsed=lapsed(now)).filter(status=Hold.Status.PENDING, lapsed=True)


def pending_chunk_ids(run: JobRun) -> list[int]:
    return list(run.chunks.filter(status=JobChunk.Status.PENDING).order_by("id").values_list("id", flat=True))


def job_chunk_run(*, chunk_id: int) -> ChunkResult | None:
    """Do one chunk, once. None when it was done already (a duplicate or redelivered task)."""
    with transaction.atomic():
        # Lock the chunk row only (of=self): a plain FOR UPDATE would also lock the run row
        # through the join and serialise every chunk of the run.
        chunk = JobChunk.objects.select_for_update(of=("self",)).select_related("run").filter(pk=chunk_id).first()
        if chunk is None or chunk.status == JobChunk.Status.DONE:
            return None
        run = chunk.run
        _commit_without_waiting_for_flush()
        result = _WORK[run.job](chunk.first_account_id, chunk.last_account_id, run.as_of)
        finished = timezone.now()
        _check_deferred_constraints()
        JobChunk.objects.filter(pk=chunk.pk).update(
            status=JobChunk.Status.DONE, rows_done=result.rows, credits_moved=result.credits, finished_at=finished
        )
        JobRun.objects.filter(pk=run.pk).update(
            chunks_done=F("chunks_done") + 1,
            progressed_at=finished,
            rows_done=F("rows_done") + result.rows,
            credits_moved=F("credits_moved") + result.credits,
        )
        # Compare-and-set: only the chunk that completes the run closes it.
        JobRun.objects.filter(pk=run.pk, status=JobRun.Status.RUNNING, chunks_done=F("chunks_total")).update(
            status=JobRun.Status.COMPLETED, finished_at=finished
        )
    return result


def job_run_inline(*, job: str, now: datetime | None = None, size: int = CHUNK_ACCOUNTS) -> ChunkResult:
    """Do a whole job in this process, chunk by chunk, without a run record (tests, commands)."""
    now = now or timezone.now()
    rows = credits = 0
    for low, high in list(account_ranges(job=job, now=now, size=size)):
        with transaction.atomic():
            result = _WORK[job](low, high, now)
        rows, credits = rows + result.rows, credits + result.credits
    return ChunkResult(rows, credits)


def holds_expire_due(*, now: datetime | None = None) -> int:
    """Release every pending hold past its expiry. Returns how many were released."""
    return job_run_inline(job=JobRun.Job.RELEASE_HOLDS, now=now).rows


def grants_expire_due(*, now: datetime | None = None) -> int:
    """Write `expire` entries for every lapsed lot that still holds credits. Returns lots expired."""
    return job_run_inline(job=JobRun.Job.EXPIRE_GRANTS, now=now).rows


def job_chunk_failed(*, chunk_id: int, error: str, final: bool) -> None:
    """Record a failed attempt (in its own transaction, after the chunk's rolled back)."""
    changes: dict = {"failures": F("failures") + 1, "last_error": error[:2000]}
    if final:
        changes["status"] = JobChunk.Status.FAILED
    JobChunk.objects.filter(pk=chunk_id, status=JobChunk.Status.PENDING).update(**changes)


def _commit_without_waiting_for_flush() -> None:
    """Let this chunk's COMMIT return before its WAL is flushed to disk (this transaction only).

    A chunk writes about 12 MB of WAL, and waiting for its flush leaves a CPU idle. Not waiting
    is safe for chunks: a crash of the database server can lose at most the last chunks that
    committed (never part of one: a commit is atomic either way), and each lost chunk loses its
    `done` mark in the same transaction, so the run stops progressing, is abandoned as stale, and
    the next run, which rescans every account, redoes exactly what was lost (the work is
    idempotent). Nothing durable can build on a lost chunk: WAL is flushed in order, so any
    later synchronous commit (a spend of the credits it granted, say) flushes the chunk's commit
    first. A read in between shows nothing a restart takes back: the lazy refill makes a lost
    grant again on the next read or spend, and reads already treat lapsed lots and holds as
    expired and released before a job writes them (DESIGN.md).
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


def _check_deferred_constraints() -> None:
    """Run the chunk's deferred foreign-key checks now, before the run row is locked for the
    counters, so that other chunks wait for that row only as long as an UPDATE takes."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _refill(low: int, high: int, now: datetime) -> ChunkResult:
    policy = policy_get()
    params = job_sql.refill_params(
        low=low,
        high=high,
        now=now,
        first_credits=policy.free_credits_first_period,
        later_credits=policy.free_credits_per_period,
        actor_id=ACTORS[JobRun.Job.REFILL],
    )
    return ChunkResult(*job_sql.refill_range(params))


def _expire_grants(low: int, high: int, now: datetime) -> ChunkResult:
    return ChunkResult(*job_sql.expire_range(low=low, high=high, now=now, actor_id=ACTORS[JobRun.Job.EXPIRE_GRANTS]))


def _release_holds(low: int, high: int, now: datetime) -> ChunkResult:
    actor_id = ACTORS[JobRun.Job.RELEASE_HOLDS]
    return ChunkResult(*job_sql.release_holds_range(low=low, high=high, now=now, actor_id=actor_id))


_WORK: dict[str, Callable[[int, int, datetime], ChunkResult]] = {
    JobRun.Job.REFILL: _refill,
    JobRun.Job.EXPIRE_GRANTS: _expire_grants,
    JobRun.Job.RELEASE_HOLDS: _release_holds,
}
