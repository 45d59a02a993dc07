"""The refill benchmark's lower bound: the refill's grants written the cheapest way, timed.

One INSERT ... SELECT of exactly the grants the refill makes (same columns, same values, same
period arithmetic) into a scratch table: no locks, no balance update, no ledger. Its wall and
server CPU seconds are the denominators of the refill's ratios, and its rows are what the
refill's grants are compared with.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from common import checkpoint, sql
from procs import proc_cpu_seconds

# The grant columns the refill writes, in its order: the raw insert writes the same ones.
GRANT_COLUMNS = "account_id, source, amount, remaining, expires_at, priority, period_start, reason, created_at"

# The same grants as the refill (the period in force for every account at as_of), written
# the cheapest way: one statement, no locks, no balance update, no ledger.
_RAW_INSERT = f"""
INSERT INTO {{table}} ({GRANT_COLUMNS})
SELECT a.id, 'free_monthly', c.credits, c.credits, (p.pstart + interval '1 month') AT TIME ZONE 'UTC',
       billing_priority('free_monthly'), p.pstart AT TIME ZONE 'UTC', 'free credits, period ' || p.idx, %(as_of_tz)s
FROM accounts_account a
CROSS JOIN LATERAL (
    SELECT CASE WHEN b.boundary <= %(as_of)s::timestamp THEN b.boundary ELSE b.boundary - interval '1 month' END
           AS pstart
    FROM (SELECT date_trunc('month', %(as_of)s::timestamp) + make_interval(days => a.period_anchor_day - 1)
          AS boundary) b
) q
CROSS JOIN LATERAL (
    SELECT q.pstart,
           ((extract(year FROM q.pstart) - extract(year FROM a.first_period_start AT TIME ZONE 'UTC')) * 12
            + extract(month FROM q.pstart) - extract(month FROM a.first_period_start AT TIME ZONE 'UTC'))::int AS idx
) p
CROSS JOIN LATERAL (
    SELECT (CASE WHEN p.idx = 0 THEN %(first_credits)s ELSE %(later_credits)s END)::bigint AS credits
) c
WHERE a.status = 'active' AND c.credits > 0
"""


def wal_position() -> str:
    return sql("SELECT pg_current_wal_lsn()::text")[0][0]


def wal_since(position: str) -> int:
    """WAL bytes written since `position`, by the whole server (other databases' work included)."""
    return int(sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %(p)s::pg_lsn)", {"p": position})[0][0])


def table_indexes(table: str) -> list[str]:
    return [
        row[0]
        for row in sql("SELECT indexdef FROM pg_indexes WHERE tablename = %(t)s ORDER BY indexname", {"t": table})
    ]


def grant_params(as_of: datetime) -> dict[str, Any]:
    from billing.policy import policy_get

    policy = policy_get()
    return {
        "as_of": as_of.astimezone(UTC).replace(tzinfo=None),
        "as_of_tz": as_of,
        "first_credits": policy.free_credits_first_period,
        "later_credits": policy.free_credits_per_period,
    }


def time_raw(table: str, like: str, as_of: datetime) -> dict[str, Any]:
    """One INSERT ... SELECT of the refill's grants into a fresh table: wall and server CPU seconds."""
    from django.db import transaction

    sql(f"DROP TABLE IF EXISTS {table}")
    sql(f"CREATE TABLE {table} (LIKE billing_grant {like})")
    sql(f"ANALYZE {table}")
    checkpoint()
    backend = sql("SELECT pg_backend_pid()")[0][0]
    load, cpu_before, wal = os.getloadavg()[0], proc_cpu_seconds(backend), wal_position()
    started = time.perf_counter()
    with transaction.atomic():
        sql(_RAW_INSERT.format(table=table), grant_params(as_of))
    seconds = time.perf_counter() - started
    cpu_after = proc_cpu_seconds(backend)
    wal_bytes = wal_since(wal)
    return {
        "table": table,
        "like": like,
        "seconds": seconds,
        "db_cpu_seconds": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        "loadavg_before": load,
        "wal_bytes": wal_bytes,
        "rows": sql(f"SELECT count(*) FROM {table}")[0][0],
        "indexes": table_indexes(table),
    }


def compare_with_raw(table: str) -> dict[str, int]:
    """Rows in the refill's grants but not in the raw table and the other way round (expect 0, 0)."""
    grants = f"SELECT {GRANT_COLUMNS} FROM billing_grant WHERE source = 'free_monthly'"
    raw = f"SELECT {GRANT_COLUMNS} FROM {table}"
    missing, extra = sql(
        f"SELECT (SELECT count(*) FROM ({grants} EXCEPT ALL {raw}) x),"
        f" (SELECT count(*) FROM ({raw} EXCEPT ALL {grants}) y)"
    )[0]
    return {"refill_not_in_raw": missing, "raw_not_in_refill": extra}
