"""Run by test_sqlite_concurrency in its own process: the jobs on the embedded SQLite path.

Prints one JSON line with what each job did. Settings come from the environment the test sets.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import django


def main() -> None:
    django.setup()
    from django.core.management import call_command

    from billing.integrity import ledger_breaches
    from billing.models import Grant, Hold, JobRun
    from billing.services.jobs import job_run_inline
    from billing.services.ledger import Actor, hold_create
    from tests.billing.factories import give, make_account

    call_command("migrate", verbosity=0)
    start = datetime(2027, 3, 5, 12, tzinfo=UTC)
    due = [make_account(now=start, free=True) for _ in range(5)]
    spender = make_account(now=start)
    give(spender, 10, expires_at=start + timedelta(days=1), now=start)
    hold_create(account=spender, credits=4, expires_in=60, actor=Actor("service", "1"), now=start)

    later = start + timedelta(days=2)
    # On SQLite each job settles whole accounts, so the first job to reach the spender does
    # all its due work: the hold job runs first to be the one that does it here.
    holds = job_run_inline(job=JobRun.Job.RELEASE_HOLDS, now=later)
    lots = job_run_inline(job=JobRun.Job.EXPIRE_GRANTS, now=later)
    refill = job_run_inline(job=JobRun.Job.REFILL, now=later, size=2)
    again = job_run_inline(job=JobRun.Job.REFILL, now=later, size=2)
    print(
        json.dumps(
            {
                "refill": [refill.rows, refill.credits],
                "again": [again.rows, again.credits],
                "holds": [holds.rows, holds.credits],
                "lots": [lots.rows, lots.credits],
                "free_grants": Grant.objects.filter(source="free_monthly", account__in=due).count(),
                "pending_holds": Hold.objects.filter(status="pending").count(),
                "breaches": [str(b) for b in ledger_breaches()],
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    main()
