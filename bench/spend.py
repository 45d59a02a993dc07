"""Benchmark of the spend path against the limits of this machine, measured in the same run.

Run it with `make bench` (see bench/README.md). It recreates a dedicated PostgreSQL database,
creates N accounts with credits, starts the production web server (gunicorn with
config/gunicorn.py and the production settings; bench/settings.py adds only the bare ceiling
endpoints of bench/urls.py) and drives it with wrk from a separate process on loopback:

  A  through the API: debits, hold + capture, one hot account, balance reads, the batch route;
  B  the ceilings: bare Django endpoints (minimal debit SQL, one-row read) on the same server,
     and pgbench running the minimal debit SQL directly.

It prints the table of rates, latencies, A/B ratios against the targets, the web workers'
memory, the SQL statements per request, and writes bench/results/spend-<timestamp>.json.
It touches only its own database (the name must start with billing_bench), its Redis database
(flushed) and the processes it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from common import (
    RESULTS,
    ROOT,
    add_database_options,
    check_database_name,
    checkpoint,
    configure_django,
    flush_broker,
    ledger_check,
    load_accounts,
    log,
    public_id,
    recreate_database,
    sql,
)
from spend_load import combine, run_pgbench, run_wrk
from spend_report import ratio_clients, ratios, table
from spend_server import CpuMeter, Server, running_server

HOT_ACCOUNT = 1  # accounts are acct_bench<id, 15 digits>; id 1 gets a large grant

Scenario = tuple[str, str, int, dict[str, Any]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the spend path against bare ceilings.")
    parser.add_argument("--accounts", "-n", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10, help="Duration of each measured scenario.")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="Run the scenario list this many times, each for seconds/rounds, and add them up, so that "
        "a scenario and its ceiling share the machine's drift.",
    )
    parser.add_argument("--clients", default="16,64", help="Concurrent clients, comma-separated.")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (config/gunicorn.py default).")
    parser.add_argument("--port", type=int, default=8790)
    add_database_options(parser, database="billing_bench_spend", redis_db=10)
    parser.add_argument("--only", default="", help="Comma-separated scenario names to run (default all).")
    parser.add_argument("--skip-check", action="store_true", help="Do not run the ledger check afterwards.")
    args = parser.parse_args(argv)
    check_database_name(parser, args)
    if args.accounts < 1000:
        parser.error("--accounts must be at least 1000")
    if not 1 <= args.rounds <= 10 or args.seconds // args.rounds < 2:
        parser.error("--rounds must be from 1 to 10, with at least 2 seconds per round")
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be from 1 to 1000")
    try:
        args.client_counts = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error("--clients must be integers separated by commas")
    if not args.client_counts or any(not 1 <= c <= 256 for c in args.client_counts):
        parser.error("--clients must each be from 1 to 256")
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing: `make bench` installs Debian's wrk and PostgreSQL's pgbench")
    return args


# --- data ---------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, as_of: datetime) -> dict[str, Any]:
    """Accounts with their free credits (the refill job), one hot account, a key, scratch tables."""
    from accounts.models import Account
    from accounts.services import service_key_create
    from billing.services.jobs import job_run_inline
    from billing.services.ledger import Actor, grant_create

    started = time.perf_counter()
    recreate_database(args)
    load_accounts(args.accounts, as_of)
    refill = job_run_inline(job="refill", now=as_of)
    hot = Account.objects.get(pk=HOT_ACCOUNT)
    grant_create(
        account=hot, source="adjustment", credits=10**9, expires_at=None, actor=Actor.system("bench"), reason="bench"
    )
    # The hot account is one big customer spending as fast as the lock allows: its own rate
    # limit is off, as an operator would set it (the default of 50 a minute refuses nearly all).
    Account.objects.filter(pk=HOT_ACCOUNT).update(rate_limit_per_minute=0)
    # The accounts of debit_limit_off_*: the same debits with no per-account limit, to compare with.
    Account.objects.filter(pk__gte=account_halves(args.accounts)[1]["first"]).update(rate_limit_per_minute=0)
    _, token = service_key_create(name="bench")
    # The bare ceilings' tables: a balance per account and the debits' rows, as small as can be.
    sql("CREATE TABLE bench_balance (id bigint PRIMARY KEY, available bigint NOT NULL CHECK (available >= 0))")
    sql("INSERT INTO bench_balance SELECT id, 1000000000 FROM accounts_account")
    sql(
        "CREATE TABLE bench_spend (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
        " account_id bigint NOT NULL, credits integer NOT NULL, created_at timestamptz NOT NULL)"
    )
    sql("VACUUM (ANALYZE)")
    return {"seconds": time.perf_counter() - started, "free_grants": refill.rows, "token": token}


def statements_per_request(token: str) -> dict[str, int | None]:
    """SQL statements each API request runs, counted in this process on the same database."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
    account = public_id(2)
    counted: dict[str, int | None] = {}

    def count(name: str, call: Any) -> None:
        call()  # warm: the service key and operation prices are then cached, as in steady state
        with CaptureQueriesContext(connection) as queries:
            response = call()
        counted[name] = len(queries) if response.status_code in (200, 201) else None

    body = {"credits": 1, "reference": "bench"}
    keys = iter(range(10**6))

    def post(path: str, data: Any) -> Any:
        return client.post(path, data, content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"q-{next(keys)}")

    def hold() -> Any:
        return post(f"/api/v1/accounts/{account}/holds", body)

    count("debit", lambda: post(f"/api/v1/accounts/{account}/debits", body))
    count("hold", hold)
    holds = iter([hold().json()["id"] for _ in range(2)])  # made before counting starts
    count("capture", lambda: post(f"/api/v1/holds/{next(holds)}/capture", {}))
    count("balance", lambda: client.get(f"/api/v1/accounts/{account}/balance"))
    items = [{"account_id": public_id(3 + i), "credits": 1, "reference": "bench"} for i in range(100)]

    def batch() -> Any:
        debits = [dict(item, idempotency_key=f"qb-{next(keys)}") for item in items]
        return client.post("/api/v1/debits/batch", {"debits": debits}, content_type="application/json")

    count("batch_of_100", batch)
    return counted


# --- one run ------------------------------------------------------------------------------------


def account_halves(accounts: int) -> tuple[dict[str, int], dict[str, int]]:
    """The wrk options of the debit scenarios' two account ranges: the lower half (past the hot
    account) has the default per-account rate limit, the upper half has it switched off
    (prepare), so that the limit's cost is measured within one run (debit_{c} against
    debit_limit_off_{c})."""
    half = accounts // 2
    return {"first": HOT_ACCOUNT + 1, "accounts": half - HOT_ACCOUNT}, {"first": half + 1, "accounts": accounts - half}


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """(name, kind, clients, options) in the order they run. Each scenario runs next to the
    ceilings it is compared with, the batch included (its ceiling is pgbench at the ratios'
    client count), so that the machine's drift within a round touches both alike."""
    runs: list[Scenario] = []
    limited, unlimited = account_halves(args.accounts)
    for clients in args.client_counts:
        runs += [
            (f"debit_{clients}", "debit", clients, limited),
            (f"bare_debit_{clients}", "bare_debit", clients, {}),
            (f"pgbench_{clients}", "pgbench", clients, {}),
        ]
        if clients == ratio_clients(args):
            runs.append((f"debit_limit_off_{clients}", "debit", clients, unlimited))
            runs.append((f"batch_{args.batch_clients}", "batch", args.batch_clients, {"batch": args.batch_size}))
        runs += [
            (f"hold_capture_{clients}", "hold", clients, {}),
            (f"balance_{clients}", "balance", clients, {}),
            (f"bare_read_{clients}", "bare_read", clients, {}),
        ]
    runs += [
        ("hot_16", "debit", 16, {"hot": HOT_ACCOUNT}),
        ("bare_hot_16", "bare_debit", 16, {"hot": HOT_ACCOUNT}),
        ("pgbench_hot_16", "pgbench", 16, {"hot": HOT_ACCOUNT}),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        runs = [run for run in runs if run[0] in wanted]
    return runs


def ledger_state() -> dict[str, Any]:
    check = ledger_check()
    debits, entries, holds = sql(
        "SELECT (SELECT count(*) FROM billing_debit), (SELECT count(*) FROM billing_ledgerentry),"
        " (SELECT count(*) FROM billing_hold)"
    )[0]
    return {
        "check_seconds": check["seconds"],
        "breaches": check["breaches"],
        "first_breaches": check["first_breaches"],
        "debits": debits,
        "ledger_entries": entries,
        "holds": holds,
    }


def warm_up(args: argparse.Namespace, server: Server, token: str) -> None:
    """Debits, holds and batches, then ANALYZE.

    The debits, holds and keys tables were empty when `prepare` analyzed them. Plans made from
    "empty" statistics, such as the foreign-key checks' plans each server connection keeps for
    its life, scan the whole table, which grows during the run, until autovacuum next analyzes it
    (every scenario's speed then depended on when that happened). A live system's tables have
    statistics: after the warm-up has written rows of every kind, ANALYZE gives them theirs,
    which also makes the connections plan those checks again.
    """
    run_wrk(server, token, "debit", 16, 3, accounts=args.accounts)
    run_wrk(server, token, "hold", 16, 2, accounts=args.accounts)
    run_wrk(server, token, "batch", args.batch_clients, 2, accounts=args.accounts, batch=args.batch_size)
    log("warm-up done; ANALYZE")
    sql("ANALYZE")


def measure(args: argparse.Namespace, server: Server, token: str) -> dict[str, Any]:
    """Every scenario, in rounds, each scenario's rounds added up into one result.

    This machine's speed drifts by tens of percent over minutes (pgbench alone has measured 4,500
    to 7,000 transactions/s in one hour). A ratio of two scenarios run minutes apart carries that
    drift, so the list runs in rounds, each scenario for seconds/rounds per round. (A batch
    request takes about half a second: the few a slice's end cuts off count against the batch.)
    Every other round runs the list backwards, so that a scenario and its ceiling each run once
    in either order: a slice that follows a write-heavy one pays for work that one left behind
    (autovacuum, hint bits on its new pages), and in one fixed order the API's scenarios paid it
    every round (balance reads after holds, debits after the batch).
    """
    meter = CpuMeter(server, args.database)
    listed = scenarios(args)
    order = [
        (run, args.seconds // args.rounds)
        for index in range(args.rounds)
        for run in (listed if index % 2 == 0 else listed[::-1])
    ]
    slices: dict[str, list[dict[str, Any]]] = {}
    for scenario, seconds in order:
        slices.setdefault(scenario[0], []).append(measure_slice(args, server, token, meter, scenario, seconds))
    return {name: combine(parts) for name, parts in slices.items()}


def measure_slice(
    args: argparse.Namespace, server: Server, token: str, meter: CpuMeter, scenario: Scenario, seconds: int
) -> dict[str, Any]:
    """One round of one scenario, after a CHECKPOINT, with the CPU each part of the machine spent."""
    name, kind, clients, options = scenario
    checkpoint()
    log(f"{name}: {clients} clients, {seconds} s")
    before = meter.snapshot()
    if kind == "pgbench":
        measured = run_pgbench(args, clients, seconds, options.get("hot", 0))
    else:
        measured = run_wrk(server, token, kind, clients, seconds, **{"accounts": args.accounts, **options})
    measured.update(kind=kind, clients=clients, cpu_seconds=meter.spent(before, meter.snapshot()))
    measured["units"] = measured["units_per_second"] * measured.get("seconds", seconds)
    measured.setdefault("seconds", seconds)
    log(f"{name}: {measured['units_per_second']:.0f}/s")
    return measured


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    as_of = datetime.now(UTC)
    report: dict[str, Any] = {"started": stamp, "args": {k: v for k, v in vars(args).items() if k != "client_counts"}}
    log(f"preparing {args.accounts:,} accounts in {args.database}")
    prepared = prepare(args, as_of)
    token = prepared.pop("token")
    report["prepare"] = prepared
    report["statements_per_request"] = statements_per_request(token)
    log(f"SQL statements per request: {report['statements_per_request']}")
    flush_broker(args.redis_url)
    log_path = RESULTS / f"spend-{stamp}-gunicorn.log"
    with running_server(args, log_path) as server:
        report["server"] = {"workers": len(server.workers()), "command": "gunicorn -c config/gunicorn.py config.wsgi"}
        log(f"gunicorn up with {len(server.workers())} workers; warming up")
        warm_up(args, server, token)
        results = measure(args, server, token)
        report["worker_peak_rss_kib"] = max(server.peak_rss_kib.values(), default=0)
        report["worker_peak_rss_by_pid_kib"] = server.peak_rss_kib
    report["gunicorn_log"] = str(log_path.relative_to(ROOT))
    report["results"] = results
    report["ratios"] = ratios(results, args)
    if not args.skip_check:
        log("ledger check")
        report["ledger"] = ledger_state()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_django(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = run(args, stamp)
    report["environment"] = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "postgres": sql("SHOW server_version")[0][0],
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1],
    }
    path = RESULTS / f"spend-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(table(report))
    print(f"\nreport: {path.relative_to(ROOT)}")
    ledger = report.get("ledger")
    return 1 if ledger and ledger["breaches"] else 0


if __name__ == "__main__":
    sys.exit(main())
