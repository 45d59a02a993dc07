"""What the refill and spend benchmarks share: settings, the database they own, the account loader.

Each benchmark owns one PostgreSQL database (its name must start with `billing_bench`: it is
dropped and recreated) and one Redis database (flushed). Django is set up in the bench process
with the production settings, so that what it measures is what production runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Collection
from datetime import UTC, datetime
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
BENCH_PUBLIC_ID_KEY = "bench-only-public-id-key"

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


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- configuration, before Django starts --------------------------------------------------------


def add_database_options(parser: argparse.ArgumentParser, *, database: str, redis_db: int) -> None:
    """--database, --pg-url and --redis-url, with the benchmark's own defaults."""
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", database))
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{redis_db}"))


def check_database_name(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not SAFE_DB_NAME.match(args.database):
        parser.error("--database must start with billing_bench: the bench drops and recreates it")


def configure_django(args: argparse.Namespace) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ["DATABASE_URL"] = f"{args.pg_url}/{args.database}"
    os.environ["REDIS_URL"] = args.redis_url
    os.environ.setdefault("DJANGO_SECRET_KEY", BENCH_SECRET_KEY)
    os.environ.setdefault("PUBLIC_ID_KEY", BENCH_PUBLIC_ID_KEY)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Plain HTTP on loopback: the production settings would redirect every request to HTTPS.
    os.environ.setdefault("DJANGO_SSL_REDIRECT", "false")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def flush_broker(redis_url: str) -> None:
    """The bench owns this Redis database: drop every queued message and result from earlier runs."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()


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


def public_id(n: int) -> str:
    """The public id load_accounts gives account n (and bench/wrk/spend.lua computes)."""
    return f"acct_bench{n:015d}"


def checkpoint() -> None:
    """Start each timed step from a clean checkpoint, so none pays for the previous one's WAL."""
    sql("CHECKPOINT")


def ledger_check() -> dict[str, Any]:
    """What `check_ledger` runs, timed: the breaches found (their count and the first ten)."""
    from billing.integrity import ledger_breaches

    started = time.perf_counter()
    breaches = ledger_breaches()
    return {
        "seconds": time.perf_counter() - started,
        "breaches": len(breaches),
        "first_breaches": [str(b) for b in breaches[:10]],
    }


# --- instruction counts -------------------------------------------------------------------------

# The instruction benchmarks run their process under this; callgrind's summary goes to stderr.
CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
_COLLECTED = re.compile(r"Collected : (\d+)")


def require_valgrind(target: str) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit(f"valgrind is needed (Debian's package valgrind; `make {target}` installs it)")


def check_kinds(parser: argparse.ArgumentParser, kinds: str, known: Collection[str]) -> None:
    unknown = set(kinds.split(",")) - set(known)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(known)}")


def collected(stderr: str) -> int | None:
    """The instructions callgrind's summary says it counted; None when there is none."""
    found = _COLLECTED.search(stderr)
    return None if found is None else int(found.group(1))


# (route, its ceiling) of the instruction benchmarks: the ratio printed is ceiling / route, the
# same way up as `make bench`'s throughput ratios.
INSTRUCTION_PAIRS = [("debit", "bare_debit"), ("balance", "bare_read")]


def print_instructions(unit: str, counts: dict[str, int]) -> None:
    """The instruction benchmarks' table: instructions per `unit` of each kind, then the ratios."""
    print(f"\n{unit:<12}{'instructions':>14}")
    for kind, count in counts.items():
        print(f"{kind:<12}{count:>14,}")
    print(f"\n{'ratio':<24}{'ceiling / route':>16}")
    for route, ceiling in INSTRUCTION_PAIRS:
        if route in counts and ceiling in counts:
            print(f"{route + '_vs_' + ceiling:<24}{counts[ceiling] / counts[route]:>16.3f}")
