"""The ledger's daily rollup: the overview reads a row per day, never the ledger itself.

A run adds the entries it has not read yet to their days' rows, in one set-based statement over
an id range of the ledger (its primary key). Ids are handed out when an entry is written but
become visible when its transaction commits, so an entry with a lower id can appear after one
with a higher id: a run therefore reads only up to the highest id seen by the run before (the
mark), and only once every transaction open when the mark was taken has ended (or the mark is
MARK_TRUST_SECONDS old: a movement is one short transaction; an unrelated session idle in a
transaction must not stop the overview). The mark is taken on the database's clock, which
dates its transactions; it is not business time.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from .models import RollupState

MARK_TRUST_SECONDS = 600

# Each entry changes one lot by `credits` (held credits by `held_credits`): grants add, debits
# and holds take, captures charge what was held, refunds give a debit's credits back. A paid
# lot's credits are valued at its purchase's price per credit.
_ROLL_UP = """
WITH moved AS (
    SELECT (e.created_at AT TIME ZONE 'UTC')::date AS day, e.kind, e.credits, e.held_credits, g.source,
           p.amount_cents, p.credits AS purchase_credits
    FROM billing_ledgerentry e
    LEFT JOIN billing_grant g ON g.id = e.grant_id
    LEFT JOIN billing_purchase p ON p.grant_id = e.grant_id
    WHERE e.id > %(after)s AND e.id <= %(upto)s
)
INSERT INTO console_dailyrollup AS r (
    day, granted_free_credits, granted_paid_credits, granted_adjustment_credits, spent_credits, expired_credits,
    clawed_back_credits, voided_credits, revenue_cents, paid_credits_change, paid_value_change_cents
)
SELECT day,
       coalesce(sum(credits) FILTER (WHERE kind = 'grant' AND source IN ('free_monthly', 'promo')), 0),
       coalesce(sum(credits) FILTER (WHERE kind = 'grant' AND source = 'purchase'), 0),
       coalesce(sum(credits) FILTER (WHERE kind = 'grant' AND source = 'adjustment'), 0),
       coalesce(sum(-credits) FILTER (WHERE kind = 'debit'), 0)
           + coalesce(sum(-held_credits) FILTER (WHERE kind = 'capture'), 0)
           - coalesce(sum(credits) FILTER (WHERE kind = 'refund'), 0),
       coalesce(sum(-credits) FILTER (WHERE kind = 'expire'), 0),
       coalesce(sum(-credits) FILTER (WHERE kind = 'clawback'), 0),
       coalesce(sum(-credits) FILTER (WHERE kind = 'void'), 0),
       coalesce(sum(amount_cents) FILTER (WHERE kind = 'grant' AND source = 'purchase'), 0),
       coalesce(sum(credits) FILTER (WHERE source = 'purchase'), 0),
       coalesce(sum(credits::numeric * amount_cents / purchase_credits) FILTER (WHERE source = 'purchase'), 0)
FROM moved
GROUP BY day
ON CONFLICT (day) DO UPDATE SET
    granted_free_credits = r.granted_free_credits + EXCLUDED.granted_free_credits,
    granted_paid_credits = r.granted_paid_credits + EXCLUDED.granted_paid_credits,
    granted_adjustment_credits = r.granted_adjustment_credits + EXCLUDED.granted_adjustment_credits,
    spent_credits = r.spent_credits + EXCLUDED.spent_credits,
    expired_credits = r.expired_credits + EXCLUDED.expired_credits,
    clawed_back_credits = r.clawed_back_credits + EXCLUDED.clawed_back_credits,
    voided_credits = r.voided_credits + EXCLUDED.voided_credits,
    revenue_cents = r.revenue_cents + EXCLUDED.revenue_cents,
    paid_credits_change = r.paid_credits_change + EXCLUDED.paid_credits_change,
    paid_value_change_cents = r.paid_value_change_cents + EXCLUDED.paid_value_change_cents
"""

# Whether every transaction of this database open at the mark has ended (ours aside).
_MARK_SETTLED = """
SELECT NOT EXISTS (
    SELECT 1 FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start <= %(taken_at)s
) OR clock_timestamp() - %(taken_at)s > make_interval(secs => %(trust)s)
"""


@dataclass(frozen=True)
class RollupRun:
    rolled_from_id: int
    rolled_up_to_id: int

    @property
    def advanced(self) -> bool:
        return self.rolled_up_to_id > self.rolled_from_id


def ledger_rollup() -> RollupRun:
    """Add the ledger entries that are safe to read to the daily rows, and take the next mark.
    Runs serialise on the state row, so no entry is ever added twice."""
    RollupState.objects.get_or_create(pk=1)
    with transaction.atomic(), connection.cursor() as cursor:
        state = RollupState.objects.select_for_update().get(pk=1)
        start = state.rolled_up_to_id
        if state.mark_taken_at is not None and state.mark_id > start:
            # PostgreSQL keeps what pg_stat_activity showed for the rest of a transaction: look afresh.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(_MARK_SETTLED, {"taken_at": state.mark_taken_at, "trust": MARK_TRUST_SECONDS})
            if not cursor.fetchone()[0]:
                # The mark stays as it is, so that it grows old enough to be trusted.
                return RollupRun(start, start)
            cursor.execute(_ROLL_UP, {"after": start, "upto": state.mark_id})
            state.rolled_up_to_id = state.mark_id
        cursor.execute("SELECT coalesce(max(id), 0), clock_timestamp() FROM billing_ledgerentry")
        state.mark_id, state.mark_taken_at = cursor.fetchone()
        if state.rolled_up_to_id != start:
            state.rolled_up_at = timezone.now()
        state.save()
    return RollupRun(start, state.rolled_up_to_id)
