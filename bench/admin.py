"""Benchmark of the operator console on a large ledger: the admin pages operators open most.

Run it with `make bench-admin` (see bench/README.md). It drops, recreates and migrates a dedicated
database (its name must start with `billing_bench`), loads ACCOUNTS accounts with their grants,
purchases, debits and ENTRIES ledger entries spread over the last 30 days (set-based SQL: the
pages read the rows, they do not care how they were written), rolls the ledger up per day (the
overview's source, console/rollup.py) and then times each page through Django's full request
path (middleware, the admin, templates) with a logged-in superuser, REPEAT times each:

- the account list (100 rows, each with its free and paid credits), searched by email, filtered
  by "has paid credits";
- an account page (grants in spend order, latest entries, holds, debits, purchases, events,
  audit trail);
- the ledger list, unfiltered, filtered by account, and a deep page filtered by kind;
- the overview.

As a ceiling measured in the same run it times `SELECT count(*)` of the ledger, the query a
stock changelist runs (twice) on every page: the console's lists count at most 10,001 rows.
Every page must answer in under a second (the median of the warm runs); it exits 1 otherwise.
Results go to stdout and bench/results/admin-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import BENCH_PUBLIC_ID_KEY, BENCH_SECRET_KEY, RESULTS, ROOT, SAFE_DB_NAME

BUDGET_SECONDS = 1.0

_LOAD = [
    # Users and accounts; every tenth has bought a pack.
    """
    INSERT INTO accounts_user (id, password, is_superuser, email, is_active, is_staff, date_joined)
    SELECT i, '!bench', false, 'bench-' || i || '@bench.invalid', true, false,
           %(now)s - make_interval(days => (i %% 400)::int)
    FROM generate_series(1, %(accounts)s::bigint) AS i
    """,
    """
    INSERT INTO accounts_account (id, public_id, user_id, status, status_reason, created_at, period_anchor_day,
                                  first_period_start, free_period_start, available_credits, held_credits)
    SELECT i, 'acct_bench' || lpad(i::text, 15, '0'), i, CASE WHEN i %% 97 = 0 THEN 'suspended' ELSE 'active' END,
           '', %(now)s - make_interval(days => (i %% 400)::int), 1, %(period)s, %(period)s, 0, 0
    FROM generate_series(1, %(accounts)s::bigint) AS i
    """,
    # Lots: the current free grant, an adjustment for every other account, a purchase for every tenth.
    """
    INSERT INTO billing_grant (account_id, source, amount, remaining, expires_at, priority, period_start, reason,
                               created_at)
    SELECT i, 'free_monthly', 15, 15, %(period)s + interval '1 month', 10, %(period)s, 'bench', %(period)s
    FROM generate_series(1, %(accounts)s::bigint) AS i
    UNION ALL
    SELECT i, 'adjustment', 40, 40, NULL, 60, NULL, 'bench', %(now)s - interval '20 days'
    FROM generate_series(2, %(accounts)s::bigint, 2) AS i
    UNION ALL
    SELECT i, 'purchase', 115, 115, %(now)s + interval '300 days', 50, NULL, 'bench',
           %(now)s - make_interval(days => (i %% 30)::int)
    FROM generate_series(10, %(accounts)s::bigint, 10) AS i
    """,
    """
    INSERT INTO billing_purchase (public_id, account_id, pack_id, flow, quantity, credits, amount_cents, currency,
        status, stripe_payment_intent_id, grant_id, refunded_cents, disputed_cents, clawed_back_credits,
        unrecoverable_credits, flagged_for_review, last_error, created_at, paid_at, expires_at, updated_at)
    SELECT 'pur_bench' || lpad(g.id::text, 15, '0'), g.account_id, p.id, 'payment_intent', 1, 115, 1500, 'usd', 'paid',
           'pi_bench' || g.id, g.id, 0, 0, 0, 0, false, '', g.created_at, g.created_at, g.expires_at, g.created_at
    FROM billing_grant g CROSS JOIN (SELECT id FROM billing_creditpack WHERE slug = 'credits-115') p
    WHERE g.source = 'purchase'
    """,
    # One grant entry per lot.
    """
    INSERT INTO billing_ledgerentry (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,
                                     actor_type, actor_id, reference, created_at)
    SELECT account_id, 'grant', amount, 0, amount, 0, id, 'system', 'bench', '', created_at
    FROM billing_grant ORDER BY created_at, id
    """,
    # Debits of one credit each, spread over accounts and the last 30 days, up to the entry count.
    """
    INSERT INTO billing_debit (public_id, account_id, credits, operation, reference, metadata, actor_type, actor_id,
                               created_at)
    SELECT 'deb_bench' || lpad(n::text, 15, '0'), 1 + (n * 7919) %% %(accounts)s, 1, 'generation', 'img-' || n, '{}',
           'service', '1', %(now)s - make_interval(secs => (%(debits)s - n) * 2592000.0 / %(debits)s)
    FROM generate_series(1, %(debits)s::bigint) AS n
    """,
    """
    INSERT INTO billing_ledgerentry (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,
                                     debit_id, actor_type, actor_id, reference, created_at)
    SELECT d.account_id, 'debit', -1, 0, 10, 0, g.id, d.id, 'service', '1', d.reference, d.created_at
    FROM billing_debit d
    JOIN billing_grant g ON g.account_id = d.account_id AND g.source = 'free_monthly'
    ORDER BY d.id
    """,
    """
    UPDATE billing_grant g SET remaining = g.amount - least(g.amount, t.taken)
    FROM (SELECT grant_id, count(*) AS taken FROM billing_ledgerentry WHERE kind = 'debit' GROUP BY grant_id) t
    WHERE g.id = t.grant_id
    """,
    """
    UPDATE accounts_account a SET available_credits = s.total
    FROM (SELECT account_id, sum(remaining) AS total FROM billing_grant GROUP BY account_id) s
    WHERE a.id = s.account_id
    """,
    "SELECT setval(pg_get_serial_sequence('accounts_user', 'id'), (SELECT max(id) FROM accounts_user))",
    "SELECT setval(pg_get_serial_sequence('accounts_account', 'id'), (SELECT max(id) FROM accounts_account))",
]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the operator console's pages on a large ledger.")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000_000, help="Ledger entries in all (grants and debits).")
    parser.add_argument("--repeat", type=int, default=5, help="Timed requests per page (after one warm-up).")
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "billing_bench_admin"))
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    args = parser.parse_args(argv)
    if not SAFE_DB_NAME.match(args.database):
        parser.error("--database must start with billing_bench: the bench drops and recreates it")
    lots = args.accounts + args.accounts // 2 + args.accounts // 10
    if args.entries <= lots:
        parser.error(f"--entries must exceed the {lots} grant entries the lots make")
    return args


def configure_django(args: argparse.Namespace) -> None:
    # Production settings (DEBUG off; the test client speaks HTTPS, as behind the TLS proxy), no Redis.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    os.environ["DATABASE_URL"] = f"{args.pg_url}/{args.database}"
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SECRET_KEY", BENCH_SECRET_KEY)
    os.environ.setdefault("PUBLIC_ID_KEY", BENCH_PUBLIC_ID_KEY)
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def sql(statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def timed(step: str, action: Any) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    log(f"{step}: {seconds:.2f} s")
    return seconds


def load(args: argparse.Namespace) -> dict[str, float]:
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{args.pg_url}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
    seconds = {"migrate": timed("migrate", lambda: call_command("migrate", verbosity=0, interactive=False))}
    now = datetime.now(UTC)
    lots = args.accounts + args.accounts // 2 + args.accounts // 10
    params = {
        "accounts": args.accounts,
        "debits": args.entries - lots,
        "now": now,
        "period": now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }

    def run_load() -> None:
        for statement in _LOAD:
            sql(statement, params)

    seconds["load"] = timed("load", run_load)
    from django.db import connection

    connection.ensure_connection()
    old_autocommit = connection.get_autocommit()
    connection.set_autocommit(True)
    seconds["vacuum_analyze"] = timed("vacuum analyze", lambda: sql("VACUUM (ANALYZE)"))
    connection.set_autocommit(old_autocommit)
    return seconds


def roll_up() -> float:
    from console.rollup import ledger_rollup

    ledger_rollup()  # the first run only marks
    return timed("rollup of the whole ledger", ledger_rollup)


def measure(url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User

    client = Client(secure=True, headers={"X-Forwarded-Proto": "https"})
    client.force_login(User.objects.get(email="bench-operator@bench.invalid"))
    first = client.get(url)
    assert first.status_code == 200, (url, first.status_code, first.get("Location"))
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, (url, answer.status_code)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
    uncapped = [
        q["sql"][:120]
        for q in captured.captured_queries
        if "COUNT(*)" in q["sql"].upper() and "billing_ledgerentry" in q["sql"] and "LIMIT" not in q["sql"].upper()
    ]
    return {
        "url": url,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "queries": len(captured.captured_queries),
        "slowest_query_s": float(slowest["time"]),
        "slowest_query": slowest["sql"][:200],
        "uncapped_ledger_counts": uncapped,
    }


def pages() -> dict[str, str]:
    from django.urls import reverse

    from accounts.models import Account

    busy = Account.objects.get(pk=sql("SELECT account_id FROM billing_purchase ORDER BY id LIMIT 1")[0][0])
    accounts = reverse("admin:accounts_account_changelist")
    ledger = reverse("admin:billing_ledgerentry_changelist")
    return {
        "account list": accounts,
        "account list, searched by email": f"{accounts}?q={busy.user.email}",
        "account list, has paid credits": f"{accounts}?paid=yes",
        "account page": reverse("admin:accounts_account_change", args=[busy.public_id]),
        "ledger list": ledger,
        "ledger list, one account": f"{ledger}?account__id__exact={busy.pk}",
        "ledger list, debits, page 50": f"{ledger}?kind__exact=debit&p=50",
        "overview": reverse("admin:console_dailyrollup_changelist"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_django(args)
    from accounts.models import User

    setup = load(args)
    setup["rollup"] = roll_up()
    User.objects.create_superuser(email="bench-operator@bench.invalid", password="bench-operator-password")
    started = time.perf_counter()
    (total,) = sql("SELECT count(*) FROM billing_ledgerentry")[0]
    full_count_s = time.perf_counter() - started
    log(f"ledger entries: {total}; a full count takes {full_count_s * 1000:.0f} ms")
    results = {name: measure(url, args.repeat) for name, url in pages().items()}

    print(f"\n{args.accounts:,} accounts, {total:,} ledger entries; median of {args.repeat} warm requests each")
    print(f"ceiling for comparison: SELECT count(*) of the ledger = {full_count_s * 1000:.0f} ms\n")
    print(f"{'page':38} {'median':>9} {'max':>9} {'queries':>8} {'slowest query':>14}")
    failed = []
    for name, result in results.items():
        print(
            f"{name:38} {result['median_s'] * 1000:7.0f}ms {result['max_s'] * 1000:7.0f}ms {result['queries']:8d} "
            f"{result['slowest_query_s'] * 1000:12.0f}ms"
        )
        if result["median_s"] >= BUDGET_SECONDS or result["uncapped_ledger_counts"]:
            failed.append(name)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"admin-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "accounts": args.accounts,
        "ledger_entries": total,
        "repeat": args.repeat,
        "setup_s": setup,
        "full_ledger_count_s": full_count_s,
        "pages": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    if failed:
        print(f"OVER THE {BUDGET_SECONDS:.0f} s BUDGET (or counting the whole ledger): {', '.join(failed)}")
        return 1
    print(f"every page under {BUDGET_SECONDS:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
