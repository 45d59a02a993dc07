"""The spend benchmark's load: wrk against the server (bench/wrk/spend.lua), pgbench against
PostgreSQL (bench/wrk/pgbench-debit.sql), and a scenario's rounds added up into one result."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from typing import Any

from common import ROOT
from spend_server import Server

LUA = ROOT / "bench" / "wrk" / "spend.lua"
PGBENCH_SQL = ROOT / "bench" / "wrk" / "pgbench-debit.sql"

# The response each wrk mode counts as one unit of work done (method:status, from spend.lua).
UNITS = {
    "debit": "debit:201",
    "hold": "capture:200",
    "balance": "balance:200",
    "batch": "batch_item:201",
    "bare_debit": "bare_debit:201",
    "bare_read": "bare_read:200",
}


def run_wrk(
    server: Server,
    token: str,
    mode: str,
    clients: int,
    seconds: int,
    *,
    accounts: int,
    hot: int = 0,
    batch: int = 0,
    first: int = 1,
) -> dict[str, Any]:
    """wrk in `mode` over the accounts numbered first .. first + accounts - 1 (or only `hot`)."""
    run_id = f"{mode}{clients}h{hot}-{time.time_ns()}"
    command = [
        *("wrk", "-t", str(clients), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s"),
        *("-s", str(LUA), server.url, "--"),
        *(mode, str(accounts), token, run_id, str(hot), str(batch), str(first)),
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
    unit = UNITS[mode]
    result["unit"] = unit
    result["units_per_second"] = statuses.get(unit, 0) / wall
    result["failed"] = sum(v for k, v in statuses.items() if not k.endswith((":200", ":201")))
    return result


def run_pgbench(args: argparse.Namespace, clients: int, seconds: int, hot: int = 0) -> dict[str, Any]:
    command = [
        *("pgbench", "-n", "-f", str(PGBENCH_SQL), "-D", f"accounts={args.accounts}", "-D", f"hot={hot}"),
        *("-c", str(clients), "-j", str(min(clients, os.cpu_count() or 2)), "-T", str(seconds)),
        *("-h", "127.0.0.1", "-U", "postgres", args.database),
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
