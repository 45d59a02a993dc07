"""Set-based PostgreSQL statements for the chunked jobs (see billing/services/jobs.py).

Each function works on one account-id range inside the caller's transaction. It first locks
the accounts that have work, in id order (the same first-and-only lock every ledger writer
takes), and only then reads the lots and holds to change, in a fresh statement that sees every
write committed before the locks were granted. The refill reads no lots: its UPDATE of the
account rows takes their locks, and the same statement writes the grants and their entries.
Each writes exactly the rows the ledger service would write for the same accounts: lots,
ledger entries with running balances, cached balances.

Business time comes in as a parameter (`now`), never from the database clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings as django_settings
from django.db import connection, transaction

# The free period of each account at `now`, as billing.periods.period_at computes it: the latest
# anchor-day midnight (UTC) at or before now, and before the first period (a clock set back) the
# first period; its index counts calendar months (UTC) from the first period's.
#
# The anchor day is 1-28 (a check constraint), so this month's anchor-day midnight is at or
# before now exactly when anchor_day <= now's day of the month; the period then starts in this
# month, otherwise in the previous one (every month has the day). The caller passes the first
# instants (UTC) of the previous, this and the next month, so each row costs comparisons of
# timestamps and one addition of whole days as 24-hour steps (no time zone lookup), and no
# calendar arithmetic: the period's month is at or after the first period's (index >= 0) exactly
# when the first period starts before the month after it, and is the first period's (index 0)
# when the first period starts in it. These expressions read only the account row, so the
# refill computes them inside its UPDATE of that row (an UPDATE cannot join its own table
# laterally). Only the grant's reason text needs the index as a number: once per grant.
_MONTH = (
    "(CASE WHEN a.period_anchor_day <= %(day)s THEN %(month_start)s::timestamptz"
    " ELSE %(prev_month_start)s::timestamptz END)"
)
_NEXT_MONTH = (
    "(CASE WHEN a.period_anchor_day <= %(day)s THEN %(next_month_start)s::timestamptz"
    " ELSE %(month_start)s::timestamptz END)"
)
_START = (
    f"(CASE WHEN a.first_period_start >= {_NEXT_MONTH} THEN a.first_period_start"
    f" ELSE {_MONTH} + (a.period_anchor_day - 1) * interval '24 hours' END)"
)
_CREDITS = f"(CASE WHEN a.first_period_start >= {_MONTH} THEN %(first_credits)s ELSE %(later_credits)s END)::bigint"
_FIRST_UTC = "(a.first_period_start AT TIME ZONE 'UTC')"
_INDEX = (
    "GREATEST((CASE WHEN a.period_anchor_day <= %(day)s THEN %(month_no)s::int ELSE %(month_no)s::int - 1 END)"
    f" - (date_part('year', {_FIRST_UTC}) * 12 + date_part('month', {_FIRST_UTC}))::int, 0)"
)

# One statement per chunk, the account first:
# - `moved` updates every due account in the range (active, its recorded free period older than
#   the current one) and so takes its row lock; the range is read through the primary key, so
#   rows are locked in id order, the order every multi-account writer uses (batch debits), and a
#   lock taken by the UPDATE itself costs no separate lock record per row as SELECT ... FOR
#   UPDATE does. A concurrent writer that granted the period first (the lazy refill, under the
#   same lock) has moved free_period_start, which the UPDATE re-checks on the locked row.
#   NOT EXISTS leaves alone an account whose grant for the period exists while the account
#   records an older period (a state check_ledger reports): it is neither credited nor moved on.
# - `numbered` gives each grant its id from the grant table's identity sequence, so that the
#   grants and their entries are both written from it without joining the insert's RETURNING
#   back to the accounts. Referenced twice, it is computed once.
# - The grant insert needs no ON CONFLICT: the UPDATE already excluded accounts with the grant;
#   should one appear between the two (it cannot, under the account lock), the unique constraint
#   fails the chunk, which rolls back whole and is retried.
_REFILL = f"""
WITH moved AS (
    UPDATE accounts_account a
    SET free_period_start = {_START},
        available_credits = a.available_credits + {_CREDITS}
    WHERE a.id BETWEEN %(low)s AND %(high)s
      AND a.status = 'active'
      AND (a.free_period_start IS NULL OR a.free_period_start < {_START})
      AND NOT EXISTS (SELECT 1 FROM billing_grant g
                      WHERE g.account_id = a.id AND g.period_start = {_START} OFFSET 0)
    RETURNING a.id AS account_id, a.free_period_start AS period_start, {_INDEX} AS idx, {_CREDITS} AS credits,
              a.available_credits, a.held_credits
),
numbered AS (
    SELECT nextval('billing_grant_id_seq') AS grant_id, m.*
    FROM (SELECT * FROM moved WHERE credits > 0 ORDER BY account_id) m
),
granted AS (
    INSERT INTO billing_grant
        (id, account_id, source, amount, remaining, expires_at, priority, period_start, reason, created_at)
    SELECT grant_id, account_id, 'free_monthly', credits, credits,
           ((period_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC', %(priority)s,
           period_start, 'free credits, period ' || idx, %(now)s
    FROM numbered
),
entries AS (
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,
         actor_type, actor_id, reference, created_at)
    SELECT account_id, 'grant', credits, 0, available_credits, held_credits, grant_id,
           'system', %(actor_id)s, '', %(now)s
    FROM numbered
)
SELECT count(*), COALESCE(sum(credits), 0) FROM numbered
"""

_LOCK_WITH_LAPSED_LOTS = """
SELECT a.id FROM accounts_account a
WHERE a.id BETWEEN %(low)s AND %(high)s
  AND EXISTS (SELECT 1 FROM billing_grant g
              WHERE g.account_id = a.id AND g.spendable AND g.expires_at <= %(now)s)
ORDER BY a.id
FOR UPDATE
"""

# Entry k of an account gets balance_after = (balance after all of them) - (what the entries
# after k moved), which is the running balance in insertion order.
_EXPIRE = """
WITH lapsed AS (
    SELECT id, account_id, remaining FROM billing_grant
    WHERE account_id = ANY(%(ids)s) AND spendable AND expires_at <= %(now)s
),
zeroed AS (
    UPDATE billing_grant g SET remaining = 0
    FROM lapsed l WHERE g.id = l.id
    RETURNING g.id, g.account_id, l.remaining AS credits
),
totals AS (SELECT account_id, sum(credits) AS total FROM zeroed GROUP BY account_id),
moved AS (
    UPDATE accounts_account a SET available_credits = a.available_credits - t.total
    FROM totals t WHERE a.id = t.account_id
    RETURNING a.id AS account_id, a.available_credits AS after, a.held_credits
),
entries AS (
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,
         actor_type, actor_id, reference, created_at)
    SELECT z.account_id, 'expire', -z.credits, 0,
           m.after + COALESCE(sum(z.credits) OVER later, 0), m.held_credits, z.id,
           'system', %(actor_id)s, '', %(now)s
    FROM zeroed z JOIN moved m ON m.account_id = z.account_id
    WINDOW later AS (PARTITION BY z.account_id ORDER BY z.id ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
    ORDER BY z.account_id, z.id
    RETURNING credits
)
SELECT count(*), COALESCE(-sum(credits), 0) FROM entries
"""

_LOCK_WITH_LAPSED_HOLDS = """
SELECT a.id FROM accounts_account a
WHERE a.id BETWEEN %(low)s AND %(high)s
  AND a.held_credits > 0
  AND EXISTS (SELECT 1 FROM billing_hold h
              WHERE h.account_id = a.id AND h.status = 'pending' AND h.expires_at <= %(now)s)
ORDER BY a.id
FOR UPDATE
"""

# A lapsed hold gives each lot back what it took (a `release` entry); a lot that has expired
# meanwhile expires those credits again at once (an `expire` entry), as the ledger service does.
_RELEASE_HOLDS = """
WITH lapsed AS (
    UPDATE billing_hold h SET status = 'expired', settled_at = %(now)s
    WHERE h.account_id = ANY(%(ids)s) AND h.status = 'pending' AND h.expires_at <= %(now)s
    RETURNING h.id, h.account_id
),
alloc AS (
    SELECT e.id AS entry_id, e.hold_id, e.grant_id, l.account_id, -e.credits AS n
    FROM billing_ledgerentry e JOIN lapsed l ON e.hold_id = l.id
    WHERE e.kind = 'hold'
),
moves AS (
    SELECT a.account_id, a.entry_id, 1 AS step, 'release' AS kind, a.n AS credits, -a.n AS held,
           a.grant_id, a.hold_id
    FROM alloc a
    UNION ALL
    SELECT a.account_id, a.entry_id, 2, 'expire', -a.n, 0, a.grant_id, NULL
    FROM alloc a JOIN billing_grant g ON g.id = a.grant_id
    WHERE g.expires_at <= %(now)s
),
lots AS (
    UPDATE billing_grant g SET remaining = g.remaining + x.net
    FROM (SELECT grant_id, sum(credits) AS net FROM moves GROUP BY grant_id) x
    WHERE g.id = x.grant_id AND x.net <> 0
    RETURNING g.id
),
totals AS (SELECT account_id, sum(credits) AS c, sum(held) AS h FROM moves GROUP BY account_id),
moved AS (
    UPDATE accounts_account a
    SET available_credits = a.available_credits + t.c, held_credits = a.held_credits + t.h
    FROM totals t WHERE a.id = t.account_id
    RETURNING a.id AS account_id, a.available_credits AS after, a.held_credits AS held_after
),
entries AS (
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id,
         actor_type, actor_id, reference, created_at)
    SELECT m.account_id, m.kind, m.credits, m.held,
           t.after - COALESCE(sum(m.credits) OVER later, 0),
           t.held_after - COALESCE(sum(m.held) OVER later, 0),
           m.grant_id, m.hold_id, 'system', %(actor_id)s, '', %(now)s
    FROM moves m JOIN moved t ON t.account_id = m.account_id
    WINDOW later AS (PARTITION BY m.account_id ORDER BY m.entry_id, m.step
                     ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
    ORDER BY m.account_id, m.entry_id, m.step
    RETURNING kind
)
SELECT (SELECT count(*) FROM lapsed), (SELECT COALESCE(sum(credits), 0) FROM moves WHERE kind = 'release')
"""


# The planner overestimates these CTE chains and JIT-compiles them: 35-85 ms per chunk for
# nothing. Off for the chunk's transaction only.
_NO_JIT = "SELECT set_config('jit', 'off', true)"

# The refill locks its accounts by updating them, in the order its scan meets them. Only a
# forward scan of the primary key meets them in id order, the order every multi-account writer
# locks in (batch debits), which is what keeps a chunk and a batch from deadlocking; a bitmap or
# sequential scan, which the planner may prefer for a wide range, meets them in physical order.
# So those two are off for the chunk's transaction.
_NO_JIT_ID_ORDER = (
    "SELECT set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true), "
    "set_config('enable_bitmapscan', 'off', true)"
)


# The refill statement's rows can only reference rows that exist until it commits: its grants
# name accounts the same statement has just locked by updating them (no other transaction can
# delete or re-key them before it commits), and its entries name those accounts and the grants
# the same statement inserts. The foreign-key checks PostgreSQL would run for them (one per
# grant and two per entry, each a trigger firing a locking index lookup) can never fail, and
# they are more than half the chunk's cost (bench/README.md). So the chunk runs the statement
# with session_replication_role = replica, under which those triggers do not fire, when:
#   - the setting REFILL_SKIP_FOREIGN_KEY_CHECKS is on (the default; the env variable of that name);
#   - the database role may set it (a superuser, or GRANT SET ON PARAMETER on PostgreSQL 15+);
#   - no trigger of the schema's own (tgisinternal false) fires for what the statement does
#     (INSERT into billing_grant and billing_ledgerentry, UPDATE of accounts_account): that mode
#     would silence it too. The ledger's append-only trigger fires on UPDATE and DELETE only.
# Unique and check constraints still hold, and the mode is put back right after the statement,
# so the rest of the chunk's transaction runs with every check.
_INSERTED_BY_REFILL = ["billing_grant", "billing_ledgerentry"]
_UPDATED_BY_REFILL = ["accounts_account"]
_REFILL_SETTINGS = (
    _NO_JIT_ID_ORDER + ", current_setting('session_replication_role'), "
    "CASE WHEN %(skip)s AND {may_set} AND NOT EXISTS ("
    "SELECT 1 FROM pg_trigger t WHERE NOT t.tgisinternal AND ("
    "(t.tgrelid = ANY(%(inserted)s::regclass[]) AND t.tgtype & 4 <> 0) "  # TRIGGER_TYPE_INSERT
    "OR (t.tgrelid = ANY(%(updated)s::regclass[]) AND t.tgtype & 16 <> 0))) "  # TRIGGER_TYPE_UPDATE
    "THEN set_config('session_replication_role', 'replica', true) END"
)
# has_parameter_privilege() is PostgreSQL 15's; before it, only a superuser may set the mode.
_MAY_SET_15 = "has_parameter_privilege(current_user, 'session_replication_role', 'SET')"
_MAY_SET_OLDER = "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"


def refill_skips_foreign_key_checks() -> bool:
    """Whether a refill chunk run now, on this connection, would skip its foreign-key checks."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_refill_settings(), _refill_settings_params())
        skipping = cursor.fetchone()[-1] == "replica"
        transaction.set_rollback(True)
    return skipping


def _refill_settings() -> str:
    version: int = getattr(connection, "pg_version", 0)  # the PostgreSQL backend's server_version_num
    return _REFILL_SETTINGS.format(may_set=_MAY_SET_15 if version >= 150000 else _MAY_SET_OLDER)


def _refill_settings_params() -> dict:
    return {
        "skip": bool(django_settings.REFILL_SKIP_FOREIGN_KEY_CHECKS),
        "inserted": _INSERTED_BY_REFILL,
        "updated": _UPDATED_BY_REFILL,
    }


def _one(sql: str, params: dict, settings: str = _NO_JIT) -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(settings)
        cursor.execute(sql, params)
        count, credits = cursor.fetchone()
    return int(count), int(credits)


def _lock(sql: str, params: dict) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def refill_params(
    *, low: int, high: int, now: datetime, first_credits: int, later_credits: int, priority: int, actor_id: str
) -> dict:
    """The parameters of the refill statement (_REFILL) for the accounts in [low, high] at `now`."""
    now_utc = now.astimezone(UTC)
    month_start = now_utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return {
        "low": low,
        "high": high,
        "now": now,
        "day": now_utc.day,
        "month_start": month_start,
        "prev_month_start": (month_start - timedelta(days=1)).replace(day=1),
        "next_month_start": (month_start + timedelta(days=31)).replace(day=1),
        "month_no": now_utc.year * 12 + now_utc.month,
        "first_credits": first_credits,
        "later_credits": later_credits,
        "priority": priority,
        "actor_id": actor_id,
    }


def refill_range(params: dict) -> tuple[int, int]:
    """Grant the current period's free credits to every active account in [low, high] lacking
    them; `params` from refill_params (the bench times the same statement with them)."""
    with connection.cursor() as cursor:
        cursor.execute(_refill_settings(), _refill_settings_params())
        *_, before, mode = cursor.fetchone()
        cursor.execute(_REFILL, params)
        count, credits = cursor.fetchone()
        if mode == "replica":
            cursor.execute("SELECT set_config('session_replication_role', %s, true)", [before])
    return int(count), int(credits)


def expire_range(*, low: int, high: int, now: datetime, actor_id: str) -> tuple[int, int]:
    """Write `expire` entries for every lapsed lot with credits left in [low, high]."""
    ids = _lock(_LOCK_WITH_LAPSED_LOTS, {"low": low, "high": high, "now": now})
    if not ids:
        return 0, 0
    return _one(_EXPIRE, {"ids": ids, "now": now, "actor_id": actor_id})


def release_holds_range(*, low: int, high: int, now: datetime, actor_id: str) -> tuple[int, int]:
    """Release every pending hold past its expiry in [low, high]."""
    ids = _lock(_LOCK_WITH_LAPSED_HOLDS, {"low": low, "high": high, "now": now})
    if not ids:
        return 0, 0
    return _one(_RELEASE_HOLDS, {"ids": ids, "now": now, "actor_id": actor_id})
