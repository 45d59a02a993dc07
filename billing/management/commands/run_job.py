from __future__ import annotations

from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.models import JobRun
from billing.services.jobs import CHUNK_ACCOUNTS, job_chunk_run, job_start, pending_chunk_ids

# How far --as-of may be from the clock. Ahead, only a few minutes (hosts' clocks differ): a run
# ahead of time would expire lots and release holds early, and a refill would move every
# account's free period on to the one in force at --as-of. Behind, a little over one free
# period: a run as of a recent moment, such as a missed schedule. Rehearsing another moment
# (a month end) runs the command under faketime, which moves the clock itself.
AS_OF_MAX_AHEAD = timedelta(minutes=5)
AS_OF_MAX_BEHIND = timedelta(days=35)
AS_OF_BOUNDS = (
    f"at most {AS_OF_MAX_BEHIND.days} days behind the clock and {AS_OF_MAX_AHEAD.seconds // 60} minutes ahead of it; "
    "to rehearse another moment, run under faketime"
)


class Command(BaseCommand):
    help = (
        "Run a billing job now: refill (free monthly credits), expire_grants or release_holds. "
        "By default the chunks are done in this process; --queue hands them to the Celery workers."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("job", choices=[job.value for job in JobRun.Job])
        parser.add_argument("--queue", action="store_true", help="Queue the chunks for the workers instead.")
        parser.add_argument("--chunk-accounts", type=int, default=CHUNK_ACCOUNTS, help="Accounts per chunk.")
        parser.add_argument(
            "--as-of",
            help=f"Business time to run at (ISO 8601 with offset); default now; {AS_OF_BOUNDS}.",
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        size = options["chunk_accounts"]
        if not 1 <= size <= 1_000_000:
            raise CommandError("--chunk-accounts must be from 1 to 1000000")
        now = self._as_of(options["as_of"])
        run = job_start(job=options["job"], now=now, chunk_accounts=size)
        if run is None:
            raise CommandError(f"a {options['job']} run is already under way; see JobRun in admin")
        chunk_ids = pending_chunk_ids(run)
        if options["queue"]:
            from billing.tasks import run_job_chunk

            for chunk_id in chunk_ids:
                run_job_chunk.delay(chunk_id)
            self.stdout.write(f"run {run.pk}: queued {len(chunk_ids)} chunks")
            return
        for chunk_id in chunk_ids:
            job_chunk_run(chunk_id=chunk_id)
        run.refresh_from_db()
        self.stdout.write(
            f"run {run.pk} {run.status}: {run.chunks_done}/{run.chunks_total} chunks, "
            f"{run.rows_done} rows, {run.credits_moved} credits, {run.duration}"
        )

    def _as_of(self, raw: str | None) -> datetime:
        if raw is None:
            return timezone.now()
        try:
            parsed = parse_datetime(raw)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise CommandError("--as-of must be an ISO 8601 date-time with a UTC offset, e.g. 2027-02-28T00:05:00Z")
        now = timezone.now()
        # Compared as offsets from now: an instant near year 1 or 9999 may have no UTC date-time.
        if not -AS_OF_MAX_BEHIND <= parsed - now <= AS_OF_MAX_AHEAD:
            raise CommandError(
                f"--as-of must be from {now - AS_OF_MAX_BEHIND:%Y-%m-%dT%H:%M:%SZ} to "
                f"{now + AS_OF_MAX_AHEAD:%Y-%m-%dT%H:%M:%SZ} ({AS_OF_BOUNDS})"
            )
        return parsed
