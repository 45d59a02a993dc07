"""The refill benchmark's report: the environment it ran in and the table it prints."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable
from typing import Any

from common import SETTINGS_MODULE, sql

Run = dict[str, Any]
Cell = Callable[[Run], str]


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from billing.services import job_sql

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
        "refill_skips_foreign_key_checks": job_sql.refill_skips_foreign_key_checks(),
    }


def table(report: dict[str, Any]) -> str:
    runs = report["runs"]
    lines = [*_header(report), _row("", [f"N={run['accounts']:,}" for run in runs])]
    rows = _raw_rows() + _refill_rows() + _noop_rows() + _memory_rows()
    if all("ledger_check" in run for run in runs):
        rows += _ledger_rows()
    lines += [_row(label, [cell(run) for run in runs]) for label, cell in rows]
    if len(runs) == 2:
        small, large = (max(c["peak_kib"] for c in run["worker_memory"]["children"]) for run in runs)
        lines += [
            "",
            f"worker child peak RSS, N vs N/100: {_mib(large)} vs {_mib(small)} MiB"
            f" ({(large - small) / 1024:+.1f} MiB)",
        ]
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    last = report["runs"][-1]
    return [
        f"Refill benchmark {report['started_at']}: PostgreSQL {env['postgres'].split()[0]}, {env['cpus']} CPUs,"
        f" {env['worker']}",
        f"chunks of {last['chunk_accounts']:,} accounts; business time {report['as_of']};"
        f" scratch table for raw: {_raw_index_note(last)}",
        "refill statement's foreign-key checks: "
        + ("skipped (REFILL_SKIP_FOREIGN_KEY_CHECKS)" if env.get("refill_skips_foreign_key_checks") else "run"),
        "",
    ]


def _raw_rows() -> list[tuple[str, Cell]]:
    return [
        ("create users + accounts (s)", lambda r: f"{r['load_seconds']:.1f}"),
        ("raw INSERT..SELECT, heap only: wall (s)", lambda r: f"{r['raw']['seconds']:.2f}"),
        ("  PostgreSQL CPU (s)", lambda r: _num(r["raw"]["db_cpu_seconds"])),
        ("  WAL written (MB)", lambda r: _mb(r["raw"]["wal_bytes"])),
        ("raw INSERT..SELECT, grant indexes: wall (s)", lambda r: f"{r['raw_indexed']['seconds']:.2f}"),
    ]


def _refill_rows() -> list[tuple[str, Cell]]:
    return [
        ("refill, every account due: wall (s)", lambda r: f"{r['refill']['seconds']:.2f}"),
        ("  JobRun finished_at - started_at (s)", lambda r: f"{r['refill']['jobrun_seconds']:.2f}"),
        ("  PostgreSQL CPU, worker connections (s)", lambda r: _num(r["refill"]["db_cpu_seconds"])),
        ("  worker processes CPU (s)", lambda r: f"{r['refill']['worker_cpu_seconds']:.2f}"),
        ("  WAL written (MB)", lambda r: _mb(r["refill"]["wal_bytes"])),
        ("  chunks / grants made", lambda r: f"{r['refill']['chunks']} / {r['refill']['grants']:,}"),
        ("  ratio refill / raw, wall (target <= 2x)", lambda r: _ratio(r["refill_ratio"], 2)),
        ("  ratio refill / raw, PostgreSQL CPU", lambda r: _num(r.get("refill_db_cpu_ratio"), "x")),
        (
            "  ratio refill / raw with grant indexes, wall",
            lambda r: f"{r['refill']['seconds'] / r['raw_indexed']['seconds']:.2f}x",
        ),
    ]


def _noop_rows() -> list[tuple[str, Cell]]:
    return [
        ("refill again, nothing due: wall (s)", lambda r: f"{r['noop']['seconds']:.2f}"),
        ("  PostgreSQL CPU, worker connections (s)", lambda r: _num(r["noop"]["db_cpu_seconds"])),
        ("  grants made", lambda r: f"{r['noop']['grants']:,}"),
        ("  ratio no-op / raw, wall (target <= 1x)", lambda r: _ratio(r["noop_ratio"], 1)),
        ("  ratio no-op / raw, PostgreSQL CPU", lambda r: _num(r.get("noop_db_cpu_ratio"), "x")),
        (
            "grants = raw rows (missing / extra)",
            lambda r: "{refill_not_in_raw} / {raw_not_in_refill}".format(**r["refill_vs_raw_rows"]),
        ),
    ]


def _memory_rows() -> list[tuple[str, Cell]]:
    return [
        ("worker main process peak RSS (MiB)", lambda r: _mib(r["worker_memory"]["parent"]["peak_kib"])),
        (
            "worker children peak RSS (MiB)",
            lambda r: " / ".join(_mib(c["peak_kib"]) for c in r["worker_memory"]["children"]),
        ),
        ("load average (1 min) before refill", lambda r: f"{r['refill']['loadavg_before']:.1f}"),
    ]


def _ledger_rows() -> list[tuple[str, Cell]]:
    return [
        ("check_ledger (s, not counted)", lambda r: f"{r['ledger_check']['seconds']:.1f}"),
        (
            "check_ledger",
            lambda r: "ok" if not r["ledger_check"]["breaches"] else f"{r['ledger_check']['breaches']} BREACHES",
        ),
    ]


def _row(label: str, values: list[str]) -> str:
    return f"{label:<46}" + "".join(f"{value:>20}" for value in values)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _mb(value: int) -> str:
    return f"{value / 1e6:.0f}"


def _num(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.2f}{unit}"


def _ratio(value: float, target: float) -> str:
    return f"{value:.2f}x {'ok' if value <= target else 'OVER'}"


def _raw_index_note(run: Run) -> str:
    plain = run["raw"]["indexes"]
    return "none (heap only)" if not plain else "; ".join(plain)
