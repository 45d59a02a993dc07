"""Benchmark of the free monthly refill on PostgreSQL, end to end through real Celery workers.

Run it with `make bench-refill [N=...]` (see bench/README.md). For each of two sizes (N/100 and
N accounts) it drops, recreates and migrates a dedicated database, bulk-creates due accounts,
times the raw lower bound (one INSERT ... SELECT of the same grants into scratch tables), then
times the refill twice through `manage.py run_job refill --queue` and Celery workers it starts
itself: once with every account due, once as a no-op. It records the workers' peak memory,
runs the ledger check, prints a table and writes bench/results/refill-<timestamp>.json.

It touches nothing but the database it is given (its name must start with `billing_bench`), the
Redis database it is given (flushed), and the worker processes it starts (stopped by pid).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
SAFE_DB_NAME = re.compile(r"^billing_bench[a-z0-9_]*$")
# Production settings (DEBUG off): with DEBUG on, Django keeps every query's SQL in memory,
# which would make the workers' memory grow with N for a reason production does not have.
SETTINGS_MODULE = "config.settings.production"
BENCH_SECRET_KEY = "bench-only-secret-key-not-for-any-deployment-0123456789"
WORKER_NAME = "bench-refill@" + socket.gethostname()

# The grant columns the refill writes, in its order: the raw insert writes the same ones.
GRANT_COLUMNS = "account_id, source, amount, remaining, expires_at, priority, period_start, reason, created_at"

# Signups spread over the 400 days before the run (deterministic per id): about one account in
# ten is in its first period (50 credits), the rest in a later one (15 credits).
_LOAD_USERS = """
INSERT INTO accounts_user (id, password, last_login, is_superuser, email, is_active, is_staff, date_joined)
SELECT i, '!bench', NULL, false, 'bench-' || i || '@bench.invalid', true, false,
       (%(as_of)s::timestamp - make_interval(secs => 1 + (i * 7919) %% (400 * 86400))) AT TIME ZONE 'UTC'
FROM generate_series(1, %(n)s::bigint) AS i
"""

# Accounts as billing.signup.account_open makes them: anchored on the signup day (at most the
# 28th), the first period starting at that day's midnight UTC; all active and never refilled.
_LOAD_ACCOUNTS = """
INSERT INTO accounts_account
    (id, public_id, user_id, status, status_reason, created_at, period_anchor_day, first_period_start,
     free_period_start, available_credits, held_credits)
SELECT u.id, 'acct_bench' || lpad(u.id::text, 15, '0'), u.id, 'active', '', u.date_joined, s.anchor,
       (date_trunc('month', s.signup) + make_interval(days => s.anchor - 1)) AT TIME ZONE 'UTC',
       NULL, 0, 0
FROM accounts_user u
CROSS JOIN LATERAL (
    SELECT u.date_joined AT TIME ZONE 'UTC' AS signup,
           least(extract(day FROM u.date_joined AT TIME ZONE 'UTC')::int, 28) AS anchor
) s
ORDER BY u.id
"""

# The same grants as the refill (the period in force for every account at as_of), written
# the cheapest way: one statement, no locks, no balance update, no ledger.
_RAW_INSERT = f"""
INSERT INTO {{table}} ({GRANT_COLUMNS})
SELECT a.id, 'free_monthly', c.credits, c.credits, (p.pstart + interval '1 month') AT TIME ZONE 'UTC',
       billing_priority('free_monthly'), p.pstart AT TIME ZONE 'UTC', 'free credits, period ' || p.idx, %(as_of_tz)s
FROM accounts_account a
CROSS JOIN LATERAL (
    SELECT CASE WHEN b.boundary <= %(as_of)s::timestamp THEN b.boundary ELSE b.boundary - interval '1 month' END
           AS pstart
    FROM (SELECT date_trunc('month', %(as_of)s::timestamp) + make_interval(days => a.period_anchor_day - 1)
          AS boundary) b
) q
CROSS JOIN LATERAL (
    SELECT q.pstart,
           ((extract(year FROM q.pstart) - extract(year FROM a.first_period_start AT TIME ZONE 'UTC')) * 12
            + extract(month FROM q.pstart) - extract(month FROM a.first_period_start AT TIME ZONE 'UTC'))::int AS idx
) p
CROSS JOIN LATERAL (
    SELECT (CASE WHEN p.idx = 0 THEN %(first_credits)s ELSE %(later_credits)s END)::bigint AS credits
) c
WHERE a.status = 'active' AND c.credits > 0
"""


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- configuration, before Django starts --------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the free monthly refill end to end.")
    parser.add_argument("--accounts", "-n", type=int, default=1_500_000, help="N, accounts of the large run.")
    parser.add_argument("--chunk-accounts", type=int, default=None, help="Accounts per chunk (app default).")
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (prefork children).")
    parser.add_argument("--as-of", help="Business time of the refill (ISO 8601 with offset); default now.")
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "billing_bench"))
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE one chunk (rolled back) first.")
    parser.add_argument("--skip-small", action="store_true", help="Only the run at N (no N/100 memory baseline).")
    parser.add_argument("--skip-check", action="store_true", help="Do not run the ledger check.")
    args = parser.parse_args(argv)
    if not SAFE_DB_NAME.match(args.database):
        parser.error("--database must start with billing_bench: the bench drops and recreates it")
    if args.accounts < 100:
        parser.error("--accounts must be at least 100 (the small run has N/100)")
    return args


def configure_django(args: argparse.Namespace) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ["DATABASE_URL"] = f"{args.pg_url}/{args.database}"
    os.environ["REDIS_URL"] = args.redis_url
    os.environ.setdefault("DJANGO_SECRET_KEY", BENCH_SECRET_KEY)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- database -----------------------------------------------------------------------------------


def recreate_database(args: argparse.Namespace) -> float:
    """Drop and recreate the bench database (only it), then migrate it. Returns seconds."""
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    started = time.perf_counter()
    connections.close_all()
    with psycopg.connect(f"{args.pg_url}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
    call_command("migrate", verbosity=0, interactive=False)
    return time.perf_counter() - started


def sql(statement: str, params: dict | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def load_accounts(n: int, as_of: datetime) -> float:
    """N users and accounts, all due, in two set-based statements; then vacuum and analyze."""
    from django.db import transaction

    started = time.perf_counter()
    naive = as_of.astimezone(UTC).replace(tzinfo=None)
    with transaction.atomic():
        sql(_LOAD_USERS, {"n": n, "as_of": naive})
        sql(_LOAD_ACCOUNTS)
        for table in ("accounts_user", "accounts_account"):
            sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %(n)s)", {"n": n})
    # What autovacuum would have done by the time of a monthly run (and it may be off, as on the
    # development machine): statistics for the planner, hint bits and the visibility map written.
    sql("VACUUM (ANALYZE) accounts_user, accounts_account")
    return time.perf_counter() - started


def wal_position() -> str:
    return sql("SELECT pg_current_wal_lsn()::text")[0][0]


def wal_since(position: str) -> int:
    """WAL bytes written since `position`, by the whole server (other databases' work included)."""
    return int(sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(p)s::pg_lsn)", {"p": position})[0][0])


def checkpoint() -> None:
    """Start each timed step from a clean checkpoint, so none pays for the previous one's WAL."""
    sql("CHECKPOINT")


def table_indexes(table: str) -> list[str]:
    return [
        row[0]
        for row in sql("SELECT indexdef FROM pg_indexes WHERE tablename = %(t)s ORDER BY indexname", {"t": table})
    ]


def grant_params(as_of: datetime) -> dict[str, Any]:
    from billing.policy import policy_get

    policy = policy_get()
    return {
        "as_of": as_of.astimezone(UTC).replace(tzinfo=None),
        "as_of_tz": as_of,
        "first_credits": policy.free_credits_first_period,
        "later_credits": policy.free_credits_per_period,
    }


def time_raw(table: str, like: str, as_of: datetime) -> dict[str, Any]:
    """One INSERT ... SELECT of the refill's grants into a fresh table: wall and server CPU seconds."""
    from django.db import transaction

    sql(f"DROP TABLE IF EXISTS {table}")
    sql(f"CREATE TABLE {table} (LIKE billing_grant {like})")
    sql(f"ANALYZE {table}")
    checkpoint()
    backend = sql("SELECT pg_backend_pid()")[0][0]
    load, cpu_before, wal = os.getloadavg()[0], proc_cpu_seconds(backend), wal_position()
    started = time.perf_counter()
    with transaction.atomic():
        sql(_RAW_INSERT.format(table=table), grant_params(as_of))
    seconds = time.perf_counter() - started
    cpu_after = proc_cpu_seconds(backend)
    wal_bytes = wal_since(wal)
    return {
        "table": table,
        "like": like,
        "seconds": seconds,
        "db_cpu_seconds": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        "loadavg_before": load,
        "wal_bytes": wal_bytes,
        "rows": sql(f"SELECT count(*) FROM {table}")[0][0],
        "indexes": table_indexes(table),
    }


def compare_with_raw(table: str) -> dict[str, int]:
    """Rows in the refill's grants but not in the raw table and the other way round (expect 0, 0)."""
    grants = f"SELECT {GRANT_COLUMNS} FROM billing_grant WHERE source = 'free_monthly'"
    raw = f"SELECT {GRANT_COLUMNS} FROM {table}"
    missing, extra = sql(
        f"SELECT (SELECT count(*) FROM ({grants} EXCEPT ALL {raw}) x),"
        f" (SELECT count(*) FROM ({raw} EXCEPT ALL {grants}) y)"
    )[0]
    return {"refill_not_in_raw": missing, "raw_not_in_refill": extra}


def explain_chunk(as_of: datetime, n: int, size: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the refill statement on a chunk in the middle, rolled back."""
    from django.db import transaction

    from billing.policy import policy_get
    from billing.services import job_sql
    from billing.services.jobs import ACTORS

    low = max(1, n // 2 - size // 2)
    policy = policy_get()
    params = job_sql.refill_params(
        low=low,
        high=low + size - 1,
        now=as_of,
        first_credits=policy.free_credits_first_period,
        later_credits=policy.free_credits_per_period,
        actor_id=ACTORS["refill"],
    )
    started = time.perf_counter()
    with transaction.atomic():
        # As a chunk runs it (JIT off, accounts read in id order), and with the foreign-key
        # checks fired at the end of the statement instead of at a commit that never comes: their
        # "Trigger for constraint" lines are about half of a chunk's time and would otherwise be
        # missing from the plan.
        sql(job_sql._NO_JIT_ID_ORDER)
        sql("SET CONSTRAINTS ALL IMMEDIATE")
        plan = [row[0] for row in sql("EXPLAIN (ANALYZE, BUFFERS, WAL) " + job_sql._REFILL, params)]
        transaction.set_rollback(True)
    return {"low": params["low"], "high": params["high"], "seconds": time.perf_counter() - started, "plan": plan}


# --- CPU time, from /proc (PostgreSQL runs on this machine) ------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine; None if it is not here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


class BackendCpu:
    """CPU seconds spent by the PostgreSQL backends of the bench database other than this process's
    own (the workers' connections), found among the postmaster's children in /proc and sampled
    while a run goes on. The Celery workers open a connection per task (celery's Django fixup
    closes them around every task), so a backend's last few milliseconds between samples are
    missed: a slight undercount. Unlike the wall clock it does not grow when other work shares
    the machine, so it is the steadier number to compare. None when PostgreSQL is not local."""

    def __init__(self, database: str) -> None:
        self.own = sql("SELECT pg_backend_pid()")[0][0]
        postmaster = _parent_pid(self.own)
        self.postmaster = postmaster if postmaster and _comm(postmaster) == "postgres" else None
        self.tag = f" {database} ".encode()
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        # Whether a backend serves the bench database does not change while it lives: its command
        # line is read until it has its process title, then only its CPU counters (a sample costs
        # little, so the sampling does not take CPU from the workers it measures).
        self.ours: dict[int, bool] = {}

    def _is_ours(self, pid: int) -> bool | None:
        if pid not in self.ours:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return None
            if not title.startswith(b"postgres: "):
                return None  # forked, not yet titled: look again next time
            self.ours[pid] = pid != self.own and self.tag in title
        return self.ours[pid]

    def _read(self) -> dict[int, float]:
        if self.postmaster is None:
            return {}
        found = {}
        path = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
        children = set(map(int, path.read_text().split()))
        self.ours = {pid: mine for pid, mine in self.ours.items() if pid in children}
        for pid in children:
            if self._is_ours(pid):
                cpu = proc_cpu_seconds(pid)
                if cpu is not None:
                    found[pid] = cpu
        return found

    def start(self) -> None:
        self.base = self._read()
        self.last = dict(self.base)

    def sample(self) -> None:
        self.last.update(self._read())

    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- workers ------------------------------------------------------------------------------------


def flush_broker(redis_url: str) -> None:
    """The bench owns this Redis database: drop every queued message and result from earlier runs."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()


@dataclass
class Workers:
    """One `celery -A config worker` with prefork children, started and stopped by this process."""

    concurrency: int
    log_path: Path
    process: subprocess.Popen | None = None
    known_children: set[int] = field(default_factory=set)

    def start(self) -> None:
        from config.celery import app

        command = [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={self.concurrency}",
            "--pool=prefork",
            "-n",
            WORKER_NAME,
            f"--logfile={self.log_path}",
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}; see {self.log_path}")
            if app.control.ping(destination=[WORKER_NAME], timeout=0.5) and len(self.children()) >= self.concurrency:
                return
        raise RuntimeError(f"the worker did not answer a ping within 90 s; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []
        self.known_children.update(pids)
        return pids

    def memory(self) -> dict[str, Any]:
        """Peak (VmHWM) and current (VmRSS) resident memory of the main process and each child, KiB."""
        assert self.process is not None
        return {
            "parent": _proc_memory(self.process.pid),
            "children": [_proc_memory(pid) for pid in self.children()],
        }

    def cpu_seconds(self) -> float:
        assert self.process is not None
        pids = [self.process.pid, *self.children()]
        return sum(proc_cpu_seconds(pid) or 0.0 for pid in pids)

    def stop(self) -> None:
        """Warm shutdown by pid; a worker that will not stop, and its children, are killed by pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.children()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in self.known_children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _proc_memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0])
    return {"pid": pid, "peak_kib": fields.get("VmHWM", 0), "rss_kib": fields.get("VmRSS", 0)}


@contextmanager
def running_workers(concurrency: int, log_path: Path):  # type: ignore[no-untyped-def]
    workers = Workers(concurrency=concurrency, log_path=log_path)
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()


# --- the refill ---------------------------------------------------------------------------------


def time_refill(workers: Workers, as_of: datetime, size: int) -> dict[str, Any]:
    """`run_job refill --queue` (job start and fan-out), then wait for the run to complete."""
    from django.core.management import call_command
    from django.db import connection

    from billing.models import JobChunk, JobRun

    checkpoint()
    db_cpu = BackendCpu(connection.settings_dict["NAME"])
    db_cpu.start()
    load, worker_cpu, wal = os.getloadavg()[0], workers.cpu_seconds(), wal_position()
    started = time.perf_counter()
    call_command(
        "run_job", "refill", "--queue", "--as-of", as_of.isoformat(), "--chunk-accounts", str(size), stdout=StringIO()
    )
    run = JobRun.objects.filter(job=JobRun.Job.REFILL).latest("id")
    # One plain query per poll (no ORM instance refresh): the poll shares the CPUs with the run.
    poll = (
        "SELECT r.status, EXISTS (SELECT 1 FROM billing_jobchunk c WHERE c.run_id = r.id AND c.status = %(failed)s)"
        " FROM billing_jobrun r WHERE r.id = %(run)s"
    )
    with connection.cursor() as cursor:
        while True:
            cursor.execute(poll, {"run": run.pk, "failed": JobChunk.Status.FAILED})
            status, failed = cursor.fetchone()
            if status == JobRun.Status.COMPLETED:
                break
            if not workers.alive():
                raise RuntimeError(f"the worker died during run {run.pk}; see {workers.log_path}")
            if failed:
                raise RuntimeError(f"run {run.pk} has failed chunks; see JobChunk.last_error")
            db_cpu.sample()
            time.sleep(0.01)
    wall = time.perf_counter() - started
    db_cpu.sample()
    run.refresh_from_db()
    wal_bytes = wal_since(wal)
    assert run.finished_at is not None
    return {
        "run_id": run.pk,
        "seconds": wall,
        "jobrun_seconds": (run.finished_at - run.started_at).total_seconds(),
        "db_cpu_seconds": db_cpu.seconds(),
        "worker_cpu_seconds": workers.cpu_seconds() - worker_cpu,
        "wal_bytes": wal_bytes,
        "loadavg_before": load,
        "chunks": run.chunks_total,
        "grants": run.rows_done,
        "credits": run.credits_moved,
        "retries": sum(run.chunks.values_list("failures", flat=True)),
    }


def ledger_check() -> dict[str, Any]:
    from billing.integrity import CHECKS, ledger_breaches

    started = time.perf_counter()
    breaches = ledger_breaches()
    return {
        "seconds": time.perf_counter() - started,
        "checks": len(CHECKS),
        "breaches": len(breaches),
        "first_breaches": [str(b) for b in breaches[:10]],
    }


def counts() -> dict[str, int]:
    accounts, grants, entries, due = sql(
        "SELECT (SELECT count(*) FROM accounts_account), (SELECT count(*) FROM billing_grant),"
        " (SELECT count(*) FROM billing_ledgerentry),"
        " (SELECT count(*) FROM accounts_account WHERE free_period_start IS NULL)"
    )[0]
    return {"accounts": accounts, "grants": grants, "ledger_entries": entries, "never_refilled": due}


# --- one size, end to end -----------------------------------------------------------------------


def run_size(args: argparse.Namespace, n: int, as_of: datetime, size: int, stamp: str) -> dict[str, Any]:
    result: dict[str, Any] = {"accounts": n, "chunk_accounts": size}
    log(f"N={n:,}: recreating database {args.database}")
    result["recreate_seconds"] = recreate_database(args)
    log(f"N={n:,}: creating {n:,} users and accounts")
    result["load_seconds"] = load_accounts(n, as_of)
    if args.explain:
        log(f"N={n:,}: EXPLAIN ANALYZE of one chunk (rolled back)")
        result["explain"] = explain_chunk(as_of, n, size)
    log(f"N={n:,}: raw INSERT ... SELECT into scratch tables")
    result["raw"] = time_raw("bench_scratch_grant", "INCLUDING DEFAULTS INCLUDING IDENTITY", as_of)
    result["raw_indexed"] = time_raw("bench_scratch_grant_indexed", "INCLUDING ALL", as_of)
    flush_broker(args.redis_url)
    log_path = RESULTS / f"refill-{stamp}-worker-{n}.log"
    with running_workers(args.concurrency, log_path) as workers:
        log(f"N={n:,}: refill, every account due ({workers.process.pid if workers.process else '?'} + children)")
        result["refill"] = time_refill(workers, as_of, size)
        log(f"N={n:,}: refill again, nothing due")
        result["noop"] = time_refill(workers, as_of, size)
        result["worker_memory"] = workers.memory()
    result["worker_log"] = str(log_path.relative_to(ROOT))
    result["counts"] = counts()
    result["refill_vs_raw_rows"] = compare_with_raw("bench_scratch_grant")
    if not args.skip_check:
        log(f"N={n:,}: ledger check")
        result["ledger_check"] = ledger_check()
    raw = result["raw"]
    result["refill_ratio"] = result["refill"]["seconds"] / raw["seconds"]
    result["noop_ratio"] = result["noop"]["seconds"] / raw["seconds"]
    if raw["db_cpu_seconds"] and result["refill"]["db_cpu_seconds"] is not None:
        result["refill_db_cpu_ratio"] = result["refill"]["db_cpu_seconds"] / raw["db_cpu_seconds"]
        result["noop_db_cpu_ratio"] = result["noop"]["db_cpu_seconds"] / raw["db_cpu_seconds"]
    return result


# --- report -------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(
        sql(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem',"
            " 'max_wal_size', 'synchronous_commit', 'fsync', 'jit', 'autovacuum', 'max_parallel_workers_per_gather')"
        )
    )
    return {
        "postgres": sql("SHOW server_version")[0][0],
        "postgres_settings": settings,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "database": args.database,
        "redis": args.redis_url,
        "django_settings": SETTINGS_MODULE,
        "worker": f"celery -A config worker --pool=prefork --concurrency={args.concurrency}",
        "session_settings": "none: the bench and the workers run with the server's defaults",
        # billing/services/job_sql.py: REFILL_SKIP_FOREIGN_KEY_CHECKS and the role's rights decide
        "refill_skips_foreign_key_checks": _skips_foreign_key_checks(),
    }


def _skips_foreign_key_checks() -> bool:
    from billing.services import job_sql

    return job_sql.refill_skips_foreign_key_checks()


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _row(label: str, values: list[str]) -> str:
    return f"{label:<46}" + "".join(f"{value:>20}" for value in values)


def table(report: dict[str, Any]) -> str:
    runs = report["runs"]
    env = report["environment"]
    lines = [
        f"Refill benchmark {report['started_at']}: PostgreSQL {env['postgres'].split()[0]}, {env['cpus']} CPUs,"
        f" {env['worker']}",
        f"chunks of {runs[-1]['chunk_accounts']:,} accounts; business time {report['as_of']};"
        f" scratch table for raw: {_raw_index_note(runs[-1])}",
        "refill statement's foreign-key checks: "
        + ("skipped (REFILL_SKIP_FOREIGN_KEY_CHECKS)" if env.get("refill_skips_foreign_key_checks") else "run"),
        "",
        _row("", [f"N={run['accounts']:,}" for run in runs]),
    ]

    def add(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(_row(label, [cell(run) for run in runs]))

    add("create users + accounts (s)", lambda r: f"{r['load_seconds']:.1f}")
    add("raw INSERT..SELECT, heap only: wall (s)", lambda r: f"{r['raw']['seconds']:.2f}")
    add("  PostgreSQL CPU (s)", lambda r: _num(r["raw"]["db_cpu_seconds"]))
    add("  WAL written (MB)", lambda r: _mb(r["raw"]["wal_bytes"]))
    add("raw INSERT..SELECT, grant indexes: wall (s)", lambda r: f"{r['raw_indexed']['seconds']:.2f}")
    add("refill, every account due: wall (s)", lambda r: f"{r['refill']['seconds']:.2f}")
    add("  JobRun finished_at - started_at (s)", lambda r: f"{r['refill']['jobrun_seconds']:.2f}")
    add("  PostgreSQL CPU, worker connections (s)", lambda r: _num(r["refill"]["db_cpu_seconds"]))
    add("  worker processes CPU (s)", lambda r: f"{r['refill']['worker_cpu_seconds']:.2f}")
    add("  WAL written (MB)", lambda r: _mb(r["refill"]["wal_bytes"]))
    add("  chunks / grants made", lambda r: f"{r['refill']['chunks']} / {r['refill']['grants']:,}")
    add("  ratio refill / raw, wall (target <= 3x)", lambda r: _ratio(r["refill_ratio"], 3))
    add("  ratio refill / raw, PostgreSQL CPU", lambda r: _num(r.get("refill_db_cpu_ratio"), "x"))
    add(
        "  ratio refill / raw with grant indexes, wall",
        lambda r: f"{r['refill']['seconds'] / r['raw_indexed']['seconds']:.2f}x",
    )
    add("refill again, nothing due: wall (s)", lambda r: f"{r['noop']['seconds']:.2f}")
    add("  PostgreSQL CPU, worker connections (s)", lambda r: _num(r["noop"]["db_cpu_seconds"]))
    add("  grants made", lambda r: f"{r['noop']['grants']:,}")
    add("  ratio no-op / raw, wall (target <= 1x)", lambda r: _ratio(r["noop_ratio"], 1))
    add("  ratio no-op / raw, PostgreSQL CPU", lambda r: _num(r.get("noop_db_cpu_ratio"), "x"))
    add(
        "grants = raw rows (missing / extra)",
        lambda r: "{refill_not_in_raw} / {raw_not_in_refill}".format(**r["refill_vs_raw_rows"]),
    )
    add("worker main process peak RSS (MiB)", lambda r: _mib(r["worker_memory"]["parent"]["peak_kib"]))
    add(
        "worker children peak RSS (MiB)",
        lambda r: " / ".join(_mib(c["peak_kib"]) for c in r["worker_memory"]["children"]),
    )
    add("load average (1 min) before refill", lambda r: f"{r['refill']['loadavg_before']:.1f}")
    if all("ledger_check" in run for run in runs):
        add("check_ledger (s, not counted)", lambda r: f"{r['ledger_check']['seconds']:.1f}")
        add(
            "check_ledger",
            lambda r: "ok" if not r["ledger_check"]["breaches"] else f"{r['ledger_check']['breaches']} BREACHES",
        )
    if len(runs) == 2:
        small, large = (max(c["peak_kib"] for c in run["worker_memory"]["children"]) for run in runs)
        lines += [
            "",
            f"worker child peak RSS, N vs N/100: {_mib(large)} vs {_mib(small)} MiB"
            f" ({(large - small) / 1024:+.1f} MiB)",
        ]
    return "\n".join(lines)


def _mb(value: int) -> str:
    return f"{value / 1e6:.0f}"


def _num(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.2f}{unit}"


def _ratio(value: float, target: float) -> str:
    return f"{value:.2f}x {'ok' if value <= target else 'OVER'}"


def _raw_index_note(run: dict[str, Any]) -> str:
    plain = run["raw"]["indexes"]
    return "none (heap only)" if not plain else "; ".join(plain)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_django(args)
    from billing.services.jobs import CHUNK_ACCOUNTS

    size = args.chunk_accounts or CHUNK_ACCOUNTS
    started = datetime.now(UTC).replace(microsecond=0)
    as_of = datetime.fromisoformat(args.as_of) if args.as_of else started
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    sizes = [args.accounts] if args.skip_small else [args.accounts // 100, args.accounts]
    report: dict[str, Any] = {"started_at": started.isoformat(), "as_of": as_of.isoformat(), "runs": []}
    for n in sizes:
        report["runs"].append(run_size(args, n, as_of, size, stamp))
    report["environment"] = environment(args)
    report["finished_at"] = datetime.now(UTC).replace(microsecond=0).isoformat()
    path = RESULTS / f"refill-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"\nreport: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
