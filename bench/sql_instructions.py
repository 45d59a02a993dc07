"""Instructions PostgreSQL spends per statement: the spend routes' SQL against their bare ceilings.

Run it with `make bench-sql` (see bench/README.md). It is the database side of
`make bench-instructions`, which counts only the web worker: here the server's own work for the
same requests, counted by callgrind, so that a change to the money engine's SQL can be judged to
about 1% where `make bench` moves by 5-10%.

How: a private cluster (initdb in a temporary directory, the machine's PostgreSQL programs) is
migrated and loaded with `--accounts` accounts as `make bench` prepares its own, then stopped and
kept as a snapshot. For each kind, `postgres --single` (one process, no client, no network) runs
under `valgrind --tool=callgrind` twice from a fresh copy of the snapshot: the statement prepared
once, then executed `--warm` times, or `--warm` + `--statements` times, each execution its own
transaction as in the server. The figure is the difference of the two counts divided by
`--statements`: parsing and planning happen once (as with the server's prepared statements), and
what is not counted (the client, the network, WAL flushes to disk) is the same for route and ceiling.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    CALLGRIND,
    ROOT,
    check_kinds,
    collected,
    configure_django,
    log,
    print_instructions,
    public_id,
    require_valgrind,
)

DATABASE = "billing_bench_sql"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PostgreSQL's instructions per statement of the spend routes.")
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--statements", type=int, default=400, help="Executions counted per kind.")
    parser.add_argument("--warm", type=int, default=20, help="Executions before counting starts.")
    parser.add_argument("--kinds", default="debit,bare_debit,balance,bare_read", help="Comma-separated kinds.")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11", help="Redis for the set-up's service key.")
    args = parser.parse_args(argv)
    check_kinds(parser, args.kinds, KINDS)
    if args.statements < 1 or args.warm < 1 or args.accounts < 4:
        parser.error("--statements and --warm must be at least 1, --accounts at least 4")
    return args


# --- the statements -------------------------------------------------------------------------------
# Each kind's plan: the statements that prepare, and the statements of execution i on account
# number n in the run named `run`.
Plan = tuple[list[str], Callable[[int, int, str], list[str]]]


def _one_line(statement: str) -> str:
    """A statement as one line: `postgres --single` ends a statement at the end of a line."""
    assert "--" not in statement, "a comment would swallow the rest of the joined line"
    return " ".join(line.strip() for line in statement.splitlines() if line.strip())


def _debit() -> Plan:
    """billing_debit as the debit route calls it (billing.services.ledger.debit_spend), the
    quotas as the settings have them."""
    from billing.models import new_debit_id
    from billing.quotas import quota_settings

    per_minute, burst, daily_cap = quota_settings()
    prepare = f"PREPARE run AS SELECT * FROM billing_debit({', '.join(f'${i}' for i in range(1, 16))})"

    def execute(i: int, n: int, run: str) -> list[str]:
        return [
            f"EXECUTE run('{public_id(n)}', 1, '', 'bench', '{{}}', '{new_debit_id()}', now(), 'service', '1', "
            f"'service:1', '{run}-{i:06d}', 'hash', {per_minute}, {burst}, {daily_cap})"
        ]

    return [prepare], execute


def _bare_debit() -> Plan:
    """The bare debit endpoint's two statements in a transaction (bench/urls.py)."""
    from urls import BARE_DEBIT_INSERT, BARE_DEBIT_UPDATE

    prepare = [f"PREPARE take AS {BARE_DEBIT_UPDATE % '$1'}", f"PREPARE spend AS {BARE_DEBIT_INSERT % '$1'}"]
    return prepare, lambda i, n, run: ["BEGIN", f"EXECUTE take({n})", f"EXECUTE spend({n})", "COMMIT"]


def _balance() -> Plan:
    """The balance route's statement (billing.selectors.balance_json)."""
    from accounts.ids import row_id_keys
    from billing.selectors import _balance_query

    query = _balance_query(row_id_keys("grt_")).replace("%%", "%")
    query = query.replace("%(account)s", "$1::varchar").replace("%(now)s", "$2::timestamptz")
    return [f"PREPARE run AS {_one_line(query)}"], lambda i, n, run: [f"EXECUTE run('{public_id(n)}', now())"]


def _bare_read() -> Plan:
    from urls import BARE_READ

    return [f"PREPARE run AS {BARE_READ % '$1'}"], lambda i, n, run: [f"EXECUTE run('{public_id(n)}')"]


KINDS: dict[str, Callable[[], Plan]] = {
    "debit": _debit,
    "bare_debit": _bare_debit,
    "balance": _balance,
    "bare_read": _bare_read,
}


# --- the private cluster --------------------------------------------------------------------------


class Cluster:
    """A private cluster (tests/private_servers.py), with a snapshot of its data directory that
    each single-user run starts from."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.private_servers import PrivatePostgres

        self.pg = PrivatePostgres()
        self.root = Path(self.pg.root)
        self.data = Path(self.pg.data)
        self.snapshot = self.root / "snapshot"

    def run(self, *command: str, **kwargs: Any) -> subprocess.CompletedProcess:
        """A command run as the cluster's owner."""
        return subprocess.run(self.pg.as_owner(*command), cwd=self.root, **kwargs)

    @contextmanager
    def started(self) -> Iterator[str]:
        """The cluster started; its URL, without a database, while it runs."""
        self.pg.start()
        try:
            yield f"postgres://postgres@127.0.0.1:{self.pg.port}"
        finally:
            self.pg.stop()

    def keep_snapshot(self) -> None:
        self.run("cp", "-a", str(self.data), str(self.snapshot), check=True)

    def restore_snapshot(self) -> None:
        self.run("rm", "-rf", str(self.data), check=True)
        self.run("cp", "-a", str(self.snapshot), str(self.data), check=True)

    def instructions(self, database: str, statements: list[str]) -> int:
        """Instructions callgrind counts for a single-user backend running these statements."""
        self.restore_snapshot()
        script = self.root / "statements.sql"
        script.write_text("\n".join(statements) + "\n")
        with open(script) as stdin:
            single = (
                str(Path(self.pg.bin) / "postgres"),
                "--single",
                "-D",
                str(self.data),
                "-c",
                "fsync=off",
                database,
            )
            done = self.run(*CALLGRIND, *single, stdin=stdin, capture_output=True, text=True)
        count = collected(done.stderr)
        failed = [line for line in done.stderr.splitlines() if " ERROR: " in line or "FATAL" in line]
        if done.returncode != 0 or count is None or failed:
            raise RuntimeError(f"single-user run failed:\n{chr(10).join(failed) or done.stderr[-2000:]}")
        return count

    def remove(self) -> None:
        self.pg.destroy()


# --- the run --------------------------------------------------------------------------------------


def per_statement(cluster: Cluster, args: argparse.Namespace, plan: Plan, accounts: dict[str, int]) -> int:
    """Instructions per execution: the difference of a run of warm + counted executions and a run
    of the warm ones alone, over the accounts drawn in the same order (a stride through them)."""
    prepare, execute = plan

    def script(total: int, run: str) -> list[str]:
        lines = list(prepare)
        for i in range(total):
            lines += execute(i, accounts["first"] + (i * 7919) % accounts["accounts"], run)
        return lines

    short = cluster.instructions(DATABASE, script(args.warm, "w"))
    long = cluster.instructions(DATABASE, script(args.warm + args.statements, "l"))
    return (long - short) // args.statements


def prepared(args: argparse.Namespace, cluster: Cluster, kinds: list[str]) -> tuple[dict[str, Plan], dict[str, int]]:
    """The private cluster made and loaded as `make bench` prepares its database, then kept as the
    snapshot every run starts from; each kind's statements, and the accounts they use (those
    with no per-account rate limit, so that no run is refused)."""
    with cluster.started() as url:
        args.pg_url, args.database = url, DATABASE
        configure_django(args)
        import spend

        log(f"preparing {args.accounts:,} accounts in a private cluster under {cluster.root}")
        spend.prepare(args, datetime.now(UTC))
        plans = {kind: KINDS[kind]() for kind in kinds}
        accounts = spend.account_halves(args.accounts)[1]
    cluster.keep_snapshot()
    return plans, accounts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_valgrind("bench-sql")
    kinds = args.kinds.split(",")
    cluster = Cluster()
    try:
        plans, accounts = prepared(args, cluster, kinds)
        log(f"counting {args.statements} executions of each of {', '.join(kinds)} under callgrind")
        counts = {kind: per_statement(cluster, args, plans[kind], accounts) for kind in kinds}
    finally:
        cluster.remove()
    print_instructions("statement", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
