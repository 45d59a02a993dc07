"""The embedded SQLite default must not overdraw either: `make run` uses it out of the box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_on_sqlite(tmp_path, module: str, *args: str) -> dict:  # type: ignore[type-arg]
    """Run tests.billing.<module> in its own process on a fresh SQLite file; its JSON line."""
    run = subprocess.run(
        [sys.executable, "-m", f"tests.billing.{module}", *args],
        cwd=ROOT,
        env=sqlite_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def sqlite_env(tmp_path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "REDIS_URL": "",
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


@pytest.mark.slow
def test_concurrent_debits_on_sqlite_never_overdraw(tmp_path):
    threads, attempts_each, credits = 8, 40, 200
    result = run_on_sqlite(tmp_path, "sqlite_spend_race", str(threads), str(attempts_each), str(credits))
    assert result["ok"] == credits
    assert result["refused"] == threads * attempts_each - credits
    assert result["available"] == 0
    assert result["breaches"] == []


@pytest.mark.slow
def test_the_jobs_run_on_sqlite_through_the_ledger_service(tmp_path):
    result = run_on_sqlite(tmp_path, "sqlite_jobs")
    assert result["refill"] == [5, 5 * 50]
    assert result["again"] == [0, 0]
    assert result["free_grants"] == 5
    assert result["holds"] == [1, 4]  # the lapsed hold of 4 went back to its lot...
    assert result["lots"] == [0, 0]  # ...which had lapsed too, so it expired on the spot
    assert result["pending_holds"] == 0
    assert result["breaches"] == []


@pytest.mark.slow
def test_the_service_api_works_on_sqlite(tmp_path):
    result = run_on_sqlite(tmp_path, "sqlite_api")
    assert result["debit"] == [201, 201, "true"] and result["same_debit"]
    assert result["hold"] == [201, 200, "captured"]
    # The first item replays the single call with the same key; the poor account has one credit.
    assert result["batch"] == [200, [[201, True], [201, False], [402, False], [404, False]]]
    assert result["balance"] == [10 - 2 - 1, 0]
    assert result["breaches"] == []
