"""The spend benchmark's ratios against the issue's targets, and the table it prints."""

from __future__ import annotations

import argparse
from typing import Any

# The targets of the performance section (ratios: at least; milliseconds and MiB: at most).
TARGETS = {
    "debit_vs_bare": 0.7,
    "debit_vs_pgbench": 0.1,
    "debit_p99_ms": 50.0,
    # The issue sets no target for the hot account: this is the bench's own floor.
    "hot_vs_bare_hot": 0.5,
    "balance_vs_bare_read": 0.8,
    "batch_vs_pgbench": 1.0,
    # The quotas issue: debits with the per-account rate limit on stay within 10% of the same
    # debits on accounts whose limit is off.
    "account_limit_on_vs_off": 0.9,
    "worker_rss_mib": 150.0,
}


def ratio_clients(args: argparse.Namespace) -> int:
    """The client count the ratios compare at: 16, or the first one asked for."""
    return 16 if 16 in args.client_counts else args.client_counts[0]


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
        "account_limit_on_vs_off": div(rate(f"debit_{c}"), rate(f"debit_limit_off_{c}")),
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(report: dict[str, Any]) -> str:
    return "\n".join([*_scenario_lines(report), "", *_target_lines(report), "", *_footer_lines(report)])


def _scenario_lines(report: dict[str, Any]) -> list[str]:
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
    return lines


def _target_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{'ratio / figure':<34}{'measured':>10}{'target':>10}  met"]
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
    return lines


def _footer_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"SQL statements per request: {report['statements_per_request']}"]
    ledger = report.get("ledger")
    if ledger:
        lines.append(
            f"ledger check: {ledger['breaches']} breaches ({ledger['debits']:,} debits, "
            f"{ledger['ledger_entries']:,} entries, {ledger['holds']:,} holds)"
        )
    return lines
