"""Real Celery workers for the job fault tests (tests/faults/test_job_faults.py): the seeds each
job's due work is made from (run inside `manage.py shell` on the private servers, through the
services), a `celery -A config worker` to SIGKILL with its pool, and what the tests read back
from the database (a run's chunks) and the broker (messages queued and unacknowledged)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import redis
from celery import Celery
from kombu import Connection

import tests.celery_worker
from tests.faults.harness import manage

EMAIL_DOMAIN = "faults.invalid"

# --- seeds, run inside `manage.py shell` with the production settings ----------------------------


def seed(env: dict[str, str], kind: str, accounts: int) -> None:
    """Make `accounts` accounts with the due work of `kind` (refill, expire_grants, release_holds)."""
    done = manage(env, "shell", "-c", f"from tests.faults.jobs_harness import _seed; _seed({kind!r}, {accounts})")
    assert "seeded" in done.stdout, done.stdout + done.stderr


def _seed(kind: str, accounts: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    now = timezone.now()
    with transaction.atomic():
        made = _accounts(kind, accounts, now=now, free=kind == "refill")
        if kind == "expire_grants":
            _lapsing_lots(made, now=now)
        elif kind == "release_holds":
            _lapsed_holds(made, now=now)
    print("seeded", len(made))


def _accounts(prefix: str, n: int, *, now: datetime, free: bool) -> list:
    """Accounts opened now as signup opens them (billing.signup.account_open); without `free`,
    kept out of the free-credit machinery (tests.billing.factories.NO_FREE_CREDITS)."""
    from django.contrib.auth.hashers import make_password

    from accounts.models import Account, User
    from billing.signup import account_open
    from tests.billing.factories import NO_FREE_CREDITS

    # No password: hashing one with the production hasher would take longer than the test.
    users = User.objects.bulk_create(
        [
            User(email=f"{prefix}-{i}-{uuid.uuid4().hex[:6]}@{EMAIL_DOMAIN}", password=make_password(None))
            for i in range(n)
        ]
    )
    made = [account_open(user=user, now=now) for user in users]
    if not free:
        Account.objects.filter(pk__in=[a.pk for a in made]).update(free_period_start=NO_FREE_CREDITS)
    return made


def _lapsing_lots(accounts: list, *, now: datetime) -> None:
    """Per account: two lots granted two hours ago that lapsed half an hour ago, and one that never does."""
    from billing.models import Grant
    from billing.services.ledger import grant_create
    from tests.billing.factories import STAFF

    granted_at, lapsed_at = now - timedelta(hours=2), now - timedelta(minutes=30)
    for account in accounts:
        for credits, expires_at, reason in ((5, lapsed_at, "lapsing"), (4, lapsed_at, "lapsing"), (3, None, "live")):
            grant_create(
                account=account,
                source=Grant.Source.ADJUSTMENT,
                credits=credits,
                expires_at=expires_at,
                actor=STAFF,
                reason=f"faults {reason}",
                now=granted_at,
            )


def _lapsed_holds(accounts: list, *, now: datetime) -> None:
    """Per account: 10 credits, a hold of 4 made an hour ago for 15 minutes (lapsed), and a
    hold of 3 made then for a day (live)."""
    from billing.services.ledger import Actor, hold_create
    from tests.billing.factories import give

    service = Actor("service", "faults")
    for account in accounts:
        give(account, 10, now=now - timedelta(hours=2))
        for credits, expires_in, name in ((4, 900, "lapsing"), (3, 86400, "live")):
            reference = f"faults-{name}-{account.pk}"
            hold_create(
                account=account,
                credits=credits,
                expires_in=expires_in,
                actor=service,
                reference=reference,
                now=now - timedelta(hours=1),
            )


# --- a real worker -----------------------------------------------------------------------------


class CeleryWorker(tests.celery_worker.CeleryWorker):
    """The shared worker (tests/celery_worker.py), on a fault test's private servers."""

    @classmethod
    def start(cls, env: dict[str, str], log: Path, *, name: str = "", concurrency: int = 2) -> CeleryWorker:
        return super().start(env, log, name=name or f"faults-worker-{uuid.uuid4().hex[:8]}", concurrency=concurrency)

    def wait_sessions_gone(self, db: psycopg.Connection, timeout: float = 20) -> None:
        """A killed worker's session ends once PostgreSQL reads the closed socket: after its
        statement, which rolls the chunk's transaction back."""
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        while scalar(db, query, [self.app_name]):
            assert time.monotonic() < deadline, "the killed worker's database sessions did not end"
            time.sleep(0.1)


# --- the database and the broker ---------------------------------------------------------------


def wait_until(condition, what: str, timeout: float = 90, worker: CeleryWorker | None = None):  # type: ignore[no-untyped-def]
    """Poll `condition()` until it is truthy and return it; fail naming `what` (and the worker's log)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        log = f"\n{worker.tail()}" if worker else ""
        assert time.monotonic() < deadline, f"no {what} within {timeout} s{log}"
        time.sleep(0.02)
    return result


def scalar(db: psycopg.Connection, query: str, params: list | dict | None = None) -> int:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class RunState:
    pk: int
    status: str
    chunks_total: int
    chunks_done: int
    rows_done: int


def run_state(db: psycopg.Connection, pk: int) -> RunState:
    row = db.execute(
        "SELECT id, status, chunks_total, chunks_done, rows_done FROM billing_jobrun WHERE id = %s", [pk]
    ).fetchone()
    assert row is not None
    return RunState(*row)


def runs_after(db: psycopg.Connection, job: str, pk: int) -> list[RunState]:
    ids = db.execute("SELECT id FROM billing_jobrun WHERE job = %s AND id > %s ORDER BY id", [job, pk]).fetchall()
    return [run_state(db, row[0]) for row in ids]


def done_chunk_rows(db: psycopg.Connection, run: int) -> int:
    return scalar(
        db, "SELECT COALESCE(sum(rows_done), 0) FROM billing_jobchunk WHERE run_id = %s AND status = 'done'", [run]
    )


def queue_run(env: dict[str, str], job: str, chunk_accounts: int) -> int:
    """Start a run as an operator does (`manage.py run_job JOB --queue`), in small chunks."""
    done = manage(env, "run_job", job, "--queue", "--chunk-accounts", str(chunk_accounts))
    words = done.stdout.split()  # "run <id>: queued <n> chunks"
    return int(words[words.index("run") + 1].rstrip(":"))


def broker_backlog(redis_url: str) -> tuple[int, int]:
    """(messages waiting in the default queue, messages delivered but never acknowledged)."""
    client = redis.Redis.from_url(redis_url)
    return int(client.llen("celery")), int(client.hlen("unacked"))


def unacknowledged_chunks(redis_url: str) -> list[int]:
    """The chunks of the run_job_chunk messages delivered and never acknowledged (kombu keeps each
    as [message, exchange, routing key]; Celery's body is [args, kwargs, embed], base64 here)."""
    chunks = []
    for raw in redis.Redis.from_url(redis_url).hvals("unacked"):
        message, _exchange, _routing_key = json.loads(raw)
        if message["headers"]["task"] == "billing.run_job_chunk":
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            chunks.append(args[0])
    return chunks


def send_task(redis_url: str, name: str) -> None:
    """Send a task by name through the broker, as beat does for a schedule."""
    app = Celery("job-faults", broker=redis_url, set_as_current=False)
    with app.connection_for_write() as connection:
        app.send_task(name, connection=connection)


def redeliver_unacknowledged(redis_url: str) -> int:
    """Put the messages a dead worker took and never acknowledged back on their queue, each by
    kombu's own restore of one message, as any worker does for them once the broker's visibility
    timeout (an hour) has passed. Not through kombu's restore_visible(): it does nothing, without
    a word, while a live worker holds the restore mutex it takes. Returns how many there were."""
    with Connection(redis_url) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client:
            tags = client.zrange(channel.qos.unacked_index_key, 0, -1)
            for tag in tags:
                channel.qos.restore_by_tag(tag, client)
    return len(tags)
