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

from datetime import datetime
from typing import Any

from django.conf import settings as django_settings
from django.db import IntegrityError, connection, transaction

# The free period each account is owed at `now` (billing_free_due), its start
# (billing_period_start), amount (billing_free_credits), end and index: the money engine's SQL
# functions (billing/sql/), which the planner inlines into the statement, so the refill and the
# lazy grant (billing_grant_free) decide periods by the same text.
_START = "billing_period_start(a.first_period_start, a.period_anchor_day, %(now)s)"
_CREDITS = f"billing_free_credits(a.first_period_start, {_START}, %(first_credits)s, %(later_credits)s)"

# One statement per chunk, the account first:
# - `moved` updates every due account in the range (active, its recorded free period older than
#   the current one) and so takes its row lock; the range is read through the primary key, so
#   rows are locked in id order, the order every multi-account writer uses (batch debits), and a
#   lock taken by the UPDATE itself costs no separate lock record per row as SELECT ... FOR
#   UPDATE does. A concurrent writer that granted the period first (the lazy refill, under the
#   same lock) has moved free_period_start, which the UPDATE re-checks on the locked row.
#   The guard (NOT EXISTS) leaves alone an account whose grant for the period exists while the
#   account records an older period (a state check_ledger reports): it is neither credited nor
#   moved on. Only a statement run with `guarded` true probes for that (refill_range).
# - `numbered` gives each grant its id from the grant table's identity sequence, so that the
#   grants and their entries are both written from it without joining the insert's RETURNING
#   back to the accounts. Referenced twice, it is computed once.
# - RETURNING sees the updated row, so the credits come from the period just recorded on it
#   (billing_free_credits of the new free_period_start) instead of that period worked out again.
# - The grant insert needs no ON CONFLICT: the UPDATE already excluded accounts with the grant
#   when guarded; unguarded, an account holding its period's grant makes the unique constraint
#   fail the statement, which refill_range then runs again guarded. Should a grant appear between
#   the UPDATE and the insert (it cannot, under the account lock), the chunk rolls back whole
#   and is retried.
_REFILL = f"""
WITH moved AS (
    UPDATE accounts_account a
    SET free_period_start = {_START},
        available_credits = a.available_credits + {_CREDITS}
    WHERE a.id BETWEEN %(low)s AND %(high)s
      AND billing_free_due(a.status, a.free_period_start, a.first_period_start, a.period_anchor_day, %(now)s)
      AND (NOT %(guarded)s OR NOT EXISTS (SELECT 1 FROM billing_grant g
                                          WHERE g.account_id = a.id AND g.period_start = {_START} OFFSET 0))
    RETURNING a.id AS account_id, a.free_period_start AS period_start, a.first_period_start AS first_start,
              billing_free_credits(a.first_period_start, a.free_period_start, %(first_credits)s, %(later_credits)s)
              AS credits, a.available_credits, a.held_credits
),
numbered AS (
    SELECT nextval('billing_grant_id_seq') AS grant_id, m.*
    FROM moved m WHERE m.credits > 0
),
granted AS (
    INSERT INTO billing_grant
        (id, account_id, source, amount, remaining, expires_at, priority, period_start, reason, created_at)
    SELECT grant_id, account_id, 'free_monthly', credits, credits, billing_period_end(period_start),
           billing_priority('free_monthly'), period_start,
           'free credits, period ' || billing_period_index(first_start, period_start), %(now)s
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
              WHERE g.account_id = a.id AND g.spendable AND billing_expired(g.expires_at, %(now)s))
ORDER BY a.id
FOR UPDATE
"""

_LOCK_WITH_LAPSED_HOLDS = """
SELECT a.id FROM accounts_account a
WHERE a.id BETWEEN %(low)s AND %(high)s
  AND a.held_credits > 0
  AND EXISTS (SELECT 1 FROM billing_hold h
              WHERE h.account_id = a.id AND h.status = 'pending' AND billing_expired(h.expires_at, %(now)s))
ORDER BY a.id
FOR UPDATE
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

# The refill statement is planned for each chunk with its values. A connection prepares the
# statements it runs again (DB_PREPARE_THRESHOLD) and, after five runs, may keep one generic
# plan, in which `now` is a parameter: the period arithmetic then converts it to UTC again for
# every account, where a plan made with its value does that once. Measured on 200,000 due
# accounts: 2% of the statement's time (10% of a chunk with nothing due, where every account's
# period is worked out); planning takes about a millisecond per chunk.
_CUSTOM_PLAN = "set_config('plan_cache_mode', 'force_custom_plan', true)"


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
#     would silence it too. The ledger's append-only trigger fires on UPDATE and DELETE only; a
#     trigger enabled ALWAYS (notifications' balance trigger) fires in that mode as well, so the
#     mode silences nothing of it.
# Unique and check constraints still hold, and the mode is put back right after the statement,
# so the rest of the chunk's transaction runs with every check.
_INSERTED_BY_REFILL = ["billing_grant", "billing_ledgerentry"]
_UPDATED_BY_REFILL = ["accounts_account"]
_REFILL_SETTINGS = (
    _NO_JIT_ID_ORDER + ", " + _CUSTOM_PLAN + ", current_setting('session_replication_role'), "
    "CASE WHEN %(skip)s AND {may_set} AND NOT EXISTS ("
    "SELECT 1 FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgenabled <> 'A' AND ("
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


def refill_params(*, low: int, high: int, now: datetime, first_credits: int, later_credits: int, actor_id: str) -> dict:
    """The parameters of the refill statement (_REFILL) for the accounts in [low, high] at `now`."""
    return {
        "low": low,
        "high": high,
        "now": now,
        "first_credits": first_credits,
        "later_credits": later_credits,
        "actor_id": actor_id,
        "guarded": False,
    }


def refill_range(params: dict) -> tuple[int, int]:
    """Grant the current period's free credits to every active account in [low, high] lacking
    them; `params` from refill_params (the bench times the same statement with them)."""
    with connection.cursor() as cursor:
        cursor.execute(_refill_settings(), _refill_settings_params())
        *_, before, mode = cursor.fetchone()
        count, credits = _refill_statement(cursor, params)
        if mode == "replica":
            cursor.execute("SELECT set_config('session_replication_role', %s, true)", [before])
    return int(count), int(credits)


# The unique (account, period_start) of free grants: what an account holding its period's grant
# already makes the unguarded refill statement fail on.
_ONE_FREE_PER_PERIOD = "grant_one_free_per_period"


def _refill_statement(cursor: Any, params: dict) -> tuple[int, int]:
    """The refill statement, unguarded under a savepoint; guarded only when that one fails.

    The guard probes the grants' unique index once per account (5-10% of the statement's
    time) for a state that check_ledger reports as broken and that the refill never makes. So
    the statement runs without it, and the unique index catches that state instead: the
    savepoint takes back all the failed run wrote, and the guarded run leaves that account alone
    and refills the rest of the range.
    """
    try:
        with transaction.atomic():
            cursor.execute(_REFILL, {**params, "guarded": False})
            return cursor.fetchone()
    except IntegrityError as error:
        if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != _ONE_FREE_PER_PERIOD:
            raise
    cursor.execute(_REFILL, {**params, "guarded": True})
    return cursor.fetchone()


def expire_range(*, low: int, high: int, now: datetime, actor_id: str) -> tuple[int, int]:
    """Expire every lapsed lot with credits left in [low, high] (billing_expire_lots)."""
    ids = _lock(_LOCK_WITH_LAPSED_LOTS, {"low": low, "high": high, "now": now})
    if not ids:
        return 0, 0
    return _one(
        "SELECT * FROM billing_expire_lots(%(ids)s, %(now)s, 'system', %(actor_id)s)",
        {"ids": ids, "now": now, "actor_id": actor_id},
    )


# The lapsed holds of the locked accounts, counted before billing_lock settles each account
# (releasing them, and settling whatever else has lapsed there).
_RELEASE_HOLDS = """
SELECT count(*), COALESCE(sum(h.credits), 0) FROM billing_hold h
WHERE h.account_id = ANY(%(ids)s) AND h.status = 'pending' AND billing_expired(h.expires_at, %(now)s)
"""
_SETTLE = "SELECT count((billing_lock(id, %(now)s, 'system', %(actor_id)s)).id), 0 FROM unnest(%(ids)s::bigint[]) id"


def release_holds_range(*, low: int, high: int, now: datetime, actor_id: str) -> tuple[int, int]:
    """Release every pending hold past its expiry in [low, high], settling each account."""
    params = {"low": low, "high": high, "now": now, "actor_id": actor_id}
    params["ids"] = _lock(_LOCK_WITH_LAPSED_HOLDS, params)
    if not params["ids"]:
        return 0, 0
    counted = _one(_RELEASE_HOLDS, params)
    _one(_SETTLE, params)
    return counted
