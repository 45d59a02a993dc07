"""credits.expiring: once per lot, when a lot with credits left will expire within
CREDITS_EXPIRING_DAYS. Free monthly lots are left out: every one of them expires at the end of
its period by design (the billing page says so), and an email a month per user would drown the
ones that matter, paid and promotional credits about to be lost."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.ids import row_public_id
from notifications.events import event_raise
from notifications.models import EventType

# The insert is the once-per-lot guard: a lot already announced conflicts and is skipped, so two
# runs that race announce each lot once.
_ANNOUNCE = """
INSERT INTO notifications_expiringnotice (grant_id, created_at)
SELECT g.id, %(now)s FROM billing_grant g
WHERE g.spendable AND g.source <> 'free_monthly'
  AND g.expires_at > %(now)s AND g.expires_at <= %(until)s
  AND (%(lots)s::bigint[] IS NULL OR g.id = ANY(%(lots)s::bigint[]))
  AND NOT EXISTS (SELECT 1 FROM notifications_expiringnotice n WHERE n.grant_id = g.id)
ORDER BY g.id
LIMIT %(limit)s
ON CONFLICT (grant_id) DO NOTHING
RETURNING grant_id
"""
_LOTS = "SELECT id, account_id, source, remaining, expires_at FROM billing_grant WHERE id = ANY(%s) ORDER BY id"
BATCH = 1000


def credits_expiring_announce(*, now: datetime | None = None, lots: list[int] | None = None) -> int:
    """Raise credits.expiring for every lot newly within the window (of `lots` only, when given:
    a lot granted already inside it is announced as it is granted, see lot_granted_announce).
    Returns how many."""
    now = now or timezone.now()
    until = now + timedelta(days=settings.CREDITS_EXPIRING_DAYS)
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ANNOUNCE, {"now": now, "until": until, "limit": BATCH, "lots": lots})
            grant_ids = [row[0] for row in cursor.fetchall()]
            cursor.execute(_LOTS, [grant_ids])
            for grant_id, account_id, source, remaining, expires_at in cursor.fetchall():
                data = {
                    "grant": row_public_id("grt_", grant_id),
                    "source": source,
                    "credits": remaining,
                    "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
                }
                event_raise(type=EventType.CREDITS_EXPIRING, account_id=account_id, data=data, now=now)
        total += len(grant_ids)
        if len(grant_ids) < BATCH:
            return total


def lot_granted_announce(*, grant: Any, now: datetime) -> None:
    """A lot granted already within the window is announced in its grant's transaction: the
    hourly run would miss one that lapses before it comes."""
    if grant.expires_at is not None and grant.expires_at <= now + timedelta(days=settings.CREDITS_EXPIRING_DAYS):
        credits_expiring_announce(now=now, lots=[grant.pk])
