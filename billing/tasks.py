"""Celery tasks: each takes ids or nothing, calls one service, and retries on its own."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from billing.audit import ledger_audit, stripe_fixes_record
from billing.idempotency import idempotency_keys_purge
from billing.models import JobRun
from billing.services.jobs import job_chunk_failed, job_chunk_run, job_start, pending_chunk_ids
from billing.services.reconciliation import stripe_reconcile

logger = logging.getLogger(__name__)

CHUNK_MAX_RETRIES = 5


def _fan_out(job: str) -> int | None:
    """Open a run of `job` and queue one task per chunk once the run is committed."""
    run = job_start(job=job)
    if run is None:
        logger.info("%s: a run is already under way", job)
        return None
    chunk_ids = pending_chunk_ids(run)
    transaction.on_commit(lambda: [run_job_chunk.delay(chunk_id) for chunk_id in chunk_ids])
    logger.info("%s: run %s queued %d chunks", job, run.pk, len(chunk_ids))
    return run.pk


@shared_task(name="billing.refill_free_credits")
def refill_free_credits() -> int | None:
    return _fan_out(JobRun.Job.REFILL)


@shared_task(name="billing.expire_grants")
def expire_grants() -> int | None:
    return _fan_out(JobRun.Job.EXPIRE_GRANTS)


@shared_task(name="billing.release_expired_holds")
def release_expired_holds() -> int | None:
    return _fan_out(JobRun.Job.RELEASE_HOLDS)


@shared_task(
    name="billing.run_job_chunk", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=CHUNK_MAX_RETRIES
)
def run_job_chunk(self, chunk_id: int) -> int | None:  # type: ignore[no-untyped-def]
    """One chunk, in one transaction. Database errors (a deadlock, a lost connection, the
    database down) are retried with backoff; each failure is recorded on the chunk for operators
    when the database can take it, the last one marking the chunk failed."""
    try:
        result = job_chunk_run(chunk_id=chunk_id)
    except DatabaseError as exc:
        _chunk_failure_record(chunk_id, exc, final=self.request.retries >= CHUNK_MAX_RETRIES)
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc
    return None if result is None else result.rows


def _chunk_failure_record(chunk_id: int, exc: DatabaseError, *, final: bool) -> None:
    """Record a failed attempt on a fresh connection (the error may have broken this one), as far
    as the database lets: while it is down nothing can be recorded, and the retry is queued all
    the same. A chunk that never completes leaves its run to be abandoned as stale and redone."""
    try:
        connection.close()
        job_chunk_failed(chunk_id=chunk_id, error=repr(exc), final=final)
    except DatabaseError as unrecorded:
        logger.warning("chunk %s failed (%r); the failure could not be recorded: %r", chunk_id, exc, unrecorded)


@shared_task(name="billing.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return idempotency_keys_purge()


@shared_task(name="billing.reconcile_stripe")
def reconcile_stripe() -> dict:
    """Fulfil purchases whose webhook never arrived. The next run is the retry: a failed
    listing is logged and reported, and nothing it did is lost (each fulfilment commits)."""
    report = stripe_reconcile()
    for line in report.lines():
        (logger.warning if line.startswith("error") else logger.info)("reconcile_stripe: %s", line)
    stripe_fixes_record(fulfilled=report.fulfilled, now=timezone.now())
    return {"fulfilled": report.fulfilled, "errors": report.errors}


@shared_task(name="billing.audit_ledger")
def audit_ledger() -> int:
    """check_ledger, nightly: breaches are logged at ERROR and counted for /metrics."""
    return ledger_audit(now=timezone.now())
