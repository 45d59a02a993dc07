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
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import (
    RESULTS,
    ROOT,
    add_database_options,
    check_database_name,
    configure_django,
    flush_broker,
    ledger_check,
    load_accounts,
    log,
    recreate_database,
    sql,
)
from refill_raw import compare_with_raw, time_raw
from refill_report import environment, table
from refill_workers import running_workers, time_refill


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the free monthly refill end to end.")
    parser.add_argument("--accounts", "-n", type=int, default=1_500_000, help="N, accounts of the large run.")
    parser.add_argument("--chunk-accounts", type=int, default=None, help="Accounts per chunk (app default).")
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (prefork children).")
    parser.add_argument("--as-of", help="Business time of the refill (ISO 8601 with offset); default now.")
    add_database_options(parser, database="billing_bench", redis_db=13)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE one chunk (rolled back) first.")
    parser.add_argument("--skip-small", action="store_true", help="Only the run at N (no N/100 memory baseline).")
    parser.add_argument("--skip-check", action="store_true", help="Do not run the ledger check.")
    args = parser.parse_args(argv)
    check_database_name(parser, args)
    if args.accounts < 100:
        parser.error("--accounts must be at least 100 (the small run has N/100)")
    return args


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


def counts() -> dict[str, int]:
    accounts, grants, entries, due = sql(
        "SELECT (SELECT count(*) FROM accounts_account), (SELECT count(*) FROM billing_grant),"
        " (SELECT count(*) FROM billing_ledgerentry),"
        " (SELECT count(*) FROM accounts_account WHERE free_period_start IS NULL)"
    )[0]
    return {"accounts": accounts, "grants": grants, "ledger_entries": entries, "never_refilled": due}


def refill_ledger_check() -> dict[str, Any]:
    from billing.integrity import CHECKS

    check = ledger_check()
    return {"seconds": check["seconds"], "checks": len(CHECKS), **check}


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
        result["ledger_check"] = refill_ledger_check()
    result.update(_ratios(result))
    return result


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    """The refill's and the no-op's wall and PostgreSQL CPU seconds over the raw insert's."""
    raw, refill, noop = result["raw"], result["refill"], result["noop"]
    ratios = {"refill_ratio": refill["seconds"] / raw["seconds"], "noop_ratio": noop["seconds"] / raw["seconds"]}
    if raw["db_cpu_seconds"] and refill["db_cpu_seconds"] is not None:
        ratios["refill_db_cpu_ratio"] = refill["db_cpu_seconds"] / raw["db_cpu_seconds"]
        ratios["noop_db_cpu_ratio"] = noop["db_cpu_seconds"] / raw["db_cpu_seconds"]
    return ratios


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
