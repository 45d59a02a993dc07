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
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import refill as shared  # bench/refill.py: database, loading and /proc helpers

ROOT = shared.ROOT
RESULTS = shared.RESULTS
BIN = shared.BIN
LUA = ROOT / "bench" / "wrk" / "spend.lua"
PGBENCH_SQL = ROOT / "bench" / "wrk" / "pgbench-debit.sql"
SERVER_SETTINGS = "bench.settings"
HOT_ACCOUNT = 1  # accounts are acct_bench<id, 15 digits>; id 1 gets a large grant

TARGETS = {
    "debit_vs_bare": 0.5,
    "debit_vs_pgbench": 0.1,
    "debit_p99_ms": 50.0,
    "hot_vs_bare_hot": 0.5,
    "balance_vs_bare_read": 0.8,
    "batch_vs_pgbench": 1.0,
    "worker_rss_mib": 150.0,
}


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
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "billing_bench_spend"))
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
    parser.add_argument("--only", default="", help="Comma-separated scenario names to run (default all).")
    parser.add_argument("--skip-check", action="store_true", help="Do not run the ledger check afterwards.")
    args = parser.parse_args(argv)
    if not shared.SAFE_DB_NAME.match(args.database):
        parser.error("--database must start with billing_bench: the bench drops and recreates it")
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


log = shared.log
sql = shared.sql


# --- data ---------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, as_of: datetime) -> dict[str, Any]:
    """Accounts with their free credits (the refill job), one hot account, a key, scratch tables."""
    from accounts.models import Account
    from accounts.services import service_key_create
    from billing.services.jobs import job_run_inline
    from billing.services.ledger import Actor, grant_create

    started = time.perf_counter()
    shared.recreate_database(args)
    shared.load_accounts(args.accounts, as_of)
    refill = job_run_inline(job="refill", now=as_of)
    hot = Account.objects.get(pk=HOT_ACCOUNT)
    grant_create(
        account=hot, source="adjustment", credits=10**9, expires_at=None, actor=Actor.system("bench"), reason="bench"
    )
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


# --- the server ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Server:
    """gunicorn with config/gunicorn.py, as production runs it, on the bench database."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib: dict[int, int] = {}
        self._sampling = False
        self._sampler: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=SERVER_SETTINGS,
            DATABASE_URL=f"{self.args.pg_url}/{self.args.database}",
            REDIS_URL=self.args.redis_url,
            DJANGO_SECRET_KEY=shared.BENCH_SECRET_KEY,
            PORT=str(self.args.port),
            LOG_LEVEL="WARNING",
            GUNICORN_LOG_LEVEL="warning",
            # The limiter runs on every request, with a budget the load cannot exhaust.
            RATE_LIMIT_SERVICE_PER_MINUTE=str(10**9),
        )
        if self.args.workers:
            env["WEB_CONCURRENCY"] = str(self.args.workers)
        return env

    def start(self) -> None:
        command = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "config.wsgi"]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200 and len(self.workers()) >= (self.args.workers or 1):
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"gunicorn did not become ready; see {self.log_path}")
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def workers(self) -> list[int]:
        return _children(self.process.pid) if self.process else []

    def _sample(self) -> None:
        while self._sampling:
            for pid in self.workers():
                try:
                    memory = shared._proc_memory(pid)
                except OSError:
                    continue
                self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), memory["peak_kib"], memory["rss_kib"])
            time.sleep(0.25)

    def stop(self) -> None:
        self._sampling = False
        if self._sampler:
            self._sampler.join()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_server(args: argparse.Namespace, log_path: Path):  # type: ignore[no-untyped-def]
    server = Server(args, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- where the CPU goes -------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _pids_named(name: str, *, cmdline_has: str = "") -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != name:
                    continue
                if cmdline_has and cmdline_has not in (entry / "cmdline").read_text():
                    continue
                found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU seconds spent by the web workers, PostgreSQL, Redis and the load generator over a step.

    PostgreSQL is the backends connected to the bench database (not the server's background
    processes, nor other databases' work). Backends that exit during the step are not counted
    (pgbench connects its own), so that figure is a lower bound for pgbench.
    """

    def __init__(self, server: Server, database: str) -> None:
        self.server = server
        self.database = database

    def snapshot(self) -> dict[str, Any]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "web": {pid: _cpu_seconds(pid) for pid in self.server.workers()},
            "postgres": {pid: _cpu_seconds(pid) for pid in _pids_named("postgres", cmdline_has=f" {self.database} ")},
            "redis": {pid: _cpu_seconds(pid) for pid in _pids_named("redis-server")},
            "load": children.ru_utime + children.ru_stime,
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        spent = {}
        for part in ("web", "postgres", "redis"):
            spent[part] = sum(after[part][pid] - before[part].get(pid, 0.0) for pid in after[part])
        spent["load"] = after["load"] - before["load"]
        return spent


# --- load ---------------------------------------------------------------------------------------


def run_wrk(
    server: Server, token: str, mode: str, clients: int, seconds: int, *, accounts: int, hot: int = 0, batch: int = 0
) -> dict[str, Any]:
    run_id = f"{mode}{clients}h{hot}-{time.time_ns()}"
    command = [
        "wrk",
        "-t",
        str(clients),
        "-c",
        str(clients),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.url,
        "--",
        mode,
        str(accounts),
        token,
        run_id,
        str(hot),
        str(batch),
    ]
    before = dict(server.peak_rss_kib)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((row for row in done.stdout.splitlines() if row.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result = json.loads(line.removeprefix("WRKJSON "))
    wall = result["duration_us"] / 1e6
    statuses = result["statuses"]
    result["seconds"] = wall
    result["requests_per_second"] = result["requests"] / wall
    result["p50_ms"] = result["latency_us"]["p50"] / 1000
    result["p99_ms"] = result["latency_us"]["p99"] / 1000
    result["peak_worker_rss_kib"] = max(server.peak_rss_kib.values(), default=0)
    result["rss_grew"] = server.peak_rss_kib != before
    unit = {
        "debit": "debit:201",
        "hold": "capture:200",
        "balance": "balance:200",
        "batch": "batch_item:201",
        "bare_debit": "bare_debit:201",
        "bare_read": "bare_read:200",
    }[mode]
    result["unit"] = unit
    result["units_per_second"] = statuses.get(unit, 0) / wall
    result["failed"] = sum(v for k, v in statuses.items() if not k.endswith((":200", ":201")))
    return result


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario's rounds as one result: rates from the summed units and seconds, CPU per
    unit from the summed CPU, p50 and p99 of all the rounds' requests; each round kept as measured."""
    units = sum(part["units"] for part in parts)
    seconds = sum(part["seconds"] for part in parts)
    cpu: dict[str, float] = {}
    for part in parts:
        for group, spent in part["cpu_seconds"].items():
            cpu[group] = cpu.get(group, 0.0) + spent
    first = parts[0]
    combined: dict[str, Any] = {
        "kind": first["kind"],
        "clients": first["clients"],
        "unit": first["unit"],
        "seconds": seconds,
        "units_per_second": units / seconds if seconds else 0.0,
        "failed": sum(part.get("failed", 0) for part in parts),
        "cpu_seconds": cpu,
        "cpu_ms_per_unit": {group: (spent * 1000 / units if units else None) for group, spent in cpu.items()},
        "rounds": parts,
    }
    if "requests" in first:
        combined["requests_per_second"] = sum(part["requests"] for part in parts) / seconds
        combined["p50_ms"] = merged_percentile(parts, 50) / 1000
        combined["p99_ms"] = merged_percentile(parts, 99) / 1000
    for part in parts:
        part.pop("quantiles_us", None)  # kept out of the report: 1,000 numbers per round
    return combined


def merged_percentile(parts: list[dict[str, Any]], percent: float) -> float:
    """The latency (us) at `percent` of all the rounds' requests together: each round's latency
    at every 0.1 percent (from wrk) stands for a thousandth of its requests."""
    points = sorted(
        (latency, part["requests"] / len(part["quantiles_us"])) for part in parts for latency in part["quantiles_us"]
    )
    wanted = sum(weight for _, weight in points) * percent / 100
    seen = 0.0
    for latency, weight in points:
        seen += weight
        if seen >= wanted - 1e-9:
            return float(latency)
    return float(points[-1][0])


def run_pgbench(args: argparse.Namespace, clients: int, seconds: int, hot: int = 0) -> dict[str, Any]:
    command = [
        "pgbench",
        "-n",
        "-f",
        str(PGBENCH_SQL),
        "-D",
        f"accounts={args.accounts}",
        "-D",
        f"hot={hot}",
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 2)),
        "-T",
        str(seconds),
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        args.database,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    values: dict[str, Any] = {"command": " ".join(command)}
    for row in done.stdout.splitlines():
        if row.startswith("tps = "):
            values["units_per_second"] = float(row.split()[2])
        elif row.startswith("latency average = "):
            values["latency_mean_ms"] = float(row.split()[3])
        elif row.startswith("number of failed transactions"):
            values["failed"] = int(row.split(":")[1].split()[0])
    values["unit"] = "transactions"
    return values


# --- statements per request ---------------------------------------------------------------------


def public_id(n: int) -> str:
    """The public id shared.load_accounts gives account n (and bench/wrk/spend.lua computes)."""
    return f"acct_bench{n:015d}"


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


def ratio_clients(args: argparse.Namespace) -> int:
    """The client count the ratios compare at: 16, or the first one asked for."""
    return 16 if 16 in args.client_counts else args.client_counts[0]


def scenarios(args: argparse.Namespace) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(name, kind, clients, options) in the order they run. Each scenario runs next to the
    ceilings it is compared with, the batch included (its ceiling is pgbench at the ratios'
    client count), so that the machine's drift within a round touches both alike."""
    runs: list[tuple[str, str, int, dict[str, Any]]] = []
    for clients in args.client_counts:
        runs += [
            (f"debit_{clients}", "debit", clients, {}),
            (f"bare_debit_{clients}", "bare_debit", clients, {}),
            (f"pgbench_{clients}", "pgbench", clients, {}),
        ]
        if clients == ratio_clients(args):
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


def ratios(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        found = results.get(name)
        return found["units_per_second"] if found else None

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    c = ratio_clients(args)
    batch = rate(f"batch_{args.batch_clients}")
    return {
        "debit_vs_bare": div(rate(f"debit_{c}"), rate(f"bare_debit_{c}")),
        "debit_vs_pgbench": div(rate(f"debit_{c}"), rate(f"pgbench_{c}")),
        "debit_p99_ms": results[f"debit_{c}"]["p99_ms"] if f"debit_{c}" in results else None,
        "hot_vs_bare_hot": div(rate("hot_16"), rate("bare_hot_16")),
        "balance_vs_bare_read": div(rate(f"balance_{c}"), rate(f"bare_read_{c}")),
        "batch_vs_pgbench": div(batch, rate(f"pgbench_{c}")),
    }


def ledger_state() -> dict[str, Any]:
    from billing.integrity import ledger_breaches

    started = time.perf_counter()
    breaches = ledger_breaches()
    debits, entries, holds = sql(
        "SELECT (SELECT count(*) FROM billing_debit), (SELECT count(*) FROM billing_ledgerentry),"
        " (SELECT count(*) FROM billing_hold)"
    )[0]
    return {
        "check_seconds": time.perf_counter() - started,
        "breaches": len(breaches),
        "first_breaches": [str(b) for b in breaches[:10]],
        "debits": debits,
        "ledger_entries": entries,
        "holds": holds,
    }


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    as_of = datetime.now(UTC)
    report: dict[str, Any] = {"started": stamp, "args": {k: v for k, v in vars(args).items() if k != "client_counts"}}
    log(f"preparing {args.accounts:,} accounts in {args.database}")
    prepared = prepare(args, as_of)
    token = prepared.pop("token")
    report["prepare"] = prepared
    report["statements_per_request"] = statements_per_request(token)
    log(f"SQL statements per request: {report['statements_per_request']}")
    shared.flush_broker(args.redis_url)
    log_path = RESULTS / f"spend-{stamp}-gunicorn.log"
    results: dict[str, Any] = {}
    with running_server(args, log_path) as server:
        report["server"] = {"workers": len(server.workers()), "command": "gunicorn -c config/gunicorn.py config.wsgi"}
        log(f"gunicorn up with {len(server.workers())} workers; warming up")
        run_wrk(server, token, "debit", 16, 3, accounts=args.accounts)
        run_wrk(server, token, "hold", 16, 2, accounts=args.accounts)
        run_wrk(server, token, "batch", args.batch_clients, 2, accounts=args.accounts, batch=args.batch_size)
        # The debits, holds and keys tables were empty when `prepare` analyzed them. Plans made
        # from "empty" statistics, such as the foreign-key checks' plans each server connection
        # keeps for its life, scan the whole table, which grows during the run, until autovacuum
        # next analyzes it (every scenario's speed then depended on when that happened). A live
        # system's tables have statistics: after the warm-up has written rows of every kind,
        # ANALYZE gives them theirs, which also makes the connections plan those checks again.
        log("warm-up done; ANALYZE")
        sql("ANALYZE")
        meter = CpuMeter(server, args.database)
        # This machine's speed drifts by tens of percent over minutes (pgbench alone has measured
        # 4,500 to 7,000 transactions/s in one hour). A ratio of two scenarios run minutes apart
        # carries that drift, so the list runs in rounds, each scenario for seconds/rounds per
        # round, and each scenario's rounds are added up. (A batch request takes about half a
        # second: the few a slice's end cuts off count against the batch.) Every other round runs
        # the list backwards, so that a scenario and its ceiling each run once in either order:
        # a slice that follows a write-heavy one pays for work that one left behind (autovacuum,
        # hint bits on its new pages), and in one fixed order the API's scenarios paid it every
        # round (balance reads after holds, debits after the batch).
        listed = scenarios(args)
        order = [
            (run, args.seconds // args.rounds)
            for index in range(args.rounds)
            for run in (listed if index % 2 == 0 else listed[::-1])
        ]
        slices: dict[str, list[dict[str, Any]]] = {}
        for (name, kind, clients, options), seconds in order:
            shared.checkpoint()
            log(f"{name}: {clients} clients, {seconds} s")
            before = meter.snapshot()
            if kind == "pgbench":
                measured = run_pgbench(args, clients, seconds, options.get("hot", 0))
            else:
                measured = run_wrk(server, token, kind, clients, seconds, accounts=args.accounts, **options)
            measured.update(kind=kind, clients=clients, cpu_seconds=meter.spent(before, meter.snapshot()))
            measured["units"] = measured["units_per_second"] * measured.get("seconds", seconds)
            measured.setdefault("seconds", seconds)
            slices.setdefault(name, []).append(measured)
            log(f"{name}: {measured['units_per_second']:.0f}/s")
        for name, parts in slices.items():
            results[name] = combine(parts)
        report["worker_peak_rss_kib"] = max(server.peak_rss_kib.values(), default=0)
        report["worker_peak_rss_by_pid_kib"] = server.peak_rss_kib
    report["gunicorn_log"] = str(log_path.relative_to(ROOT))
    report["results"] = results
    report["ratios"] = ratios(results, args)
    if not args.skip_check:
        log("ledger check")
        report["ledger"] = ledger_state()
    return report


# --- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':<22}{'clients':>8}{'req/s':>10}{'units/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
        f"{'cpu ms/unit: web':>18}{'pg':>6}{'redis':>6}{'load':>6}  unit",
    ]
    for name, r in report["results"].items():
        cpu = r.get("cpu_ms_per_unit", {})
        lines.append(
            f"{name:<22}{r['clients']:>8}{_fmt(r.get('requests_per_second')):>10}{_fmt(r['units_per_second']):>10}"
            f"{_fmt(r.get('p50_ms'), 1):>9}{_fmt(r.get('p99_ms'), 1):>9}{r.get('failed', 0):>8}"
            f"{_fmt(cpu.get('web'), 2):>18}{_fmt(cpu.get('postgres'), 2):>6}{_fmt(cpu.get('redis'), 2):>6}"
            f"{_fmt(cpu.get('load'), 2):>6}  {r['unit']}"
        )
    lines.append("")
    lines.append(f"{'ratio / figure':<34}{'measured':>10}{'target':>10}  met")
    for name, value in report["ratios"].items():
        target = TARGETS[name]
        if value is None:
            lines.append(f"{name:<34}{'-':>10}{target:>10}")
            continue
        met = value <= target if name.endswith("_ms") else value >= target
        lines.append(f"{name:<34}{value:>10.2f}{target:>10}  {'yes' if met else 'NO'}")
    rss = report.get("worker_peak_rss_kib", 0) / 1024
    target = TARGETS["worker_rss_mib"]
    lines.append(f"{'worker_rss_mib (peak)':<34}{rss:>10.1f}{target:>10}  {'yes' if rss <= target else 'NO'}")
    lines.append("")
    lines.append(f"SQL statements per request: {report['statements_per_request']}")
    ledger = report.get("ledger")
    if ledger:
        lines.append(
            f"ledger check: {ledger['breaches']} breaches ({ledger['debits']:,} debits, "
            f"{ledger['ledger_entries']:,} entries, {ledger['holds']:,} holds)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared.configure_django(args)
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
