"""A user's notification preferences: their low-balance threshold and the email kinds they
switched off. The effective threshold lives on the account row, where the balance trigger
reads it (notifications.models explains the columns)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, transaction

from accounts.models import Account
from notifications.models import EventType, NotificationPreferences

# Every kind of event that emails its user; each can be switched off.
EMAIL_KINDS: list[str] = [
    EventType.BALANCE_LOW,
    EventType.CREDITS_EXPIRING,
    EventType.PURCHASE_PAID,
    EventType.PURCHASE_REFUNDED,
    EventType.AUTO_RECHARGE_SUCCEEDED,
    EventType.AUTO_RECHARGE_FAILED,
    EventType.ACCOUNT_SUSPENDED,
]
MAX_THRESHOLD_CREDITS = 10**9


def preferences_get(*, account: Account) -> NotificationPreferences:
    found = NotificationPreferences.objects.filter(account=account).first()
    return found or NotificationPreferences(account=account)


def effective_threshold(*, account: Account) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT low_balance_threshold_credits FROM accounts_account WHERE id = %s", [account.pk])
        return int(cursor.fetchone()[0])


def emails_enabled(prefs: NotificationPreferences) -> dict[str, bool]:
    return {kind: kind not in prefs.emails_off for kind in EMAIL_KINDS}


def email_wanted(*, account: Account, kind: str) -> bool:
    if kind not in EMAIL_KINDS:
        return False
    return not NotificationPreferences.objects.filter(account=account, emails_off__contains=[kind]).exists()


def preferences_update(
    *, account: Account, low_balance_threshold: Any = ..., emails: dict[str, bool] | None = None
) -> NotificationPreferences:
    """Change what is given: `low_balance_threshold` (credits, or None for the default) and
    `emails` (kind: on/off). The caller has validated both."""
    with transaction.atomic():
        prefs, _ = NotificationPreferences.objects.select_for_update().get_or_create(account=account)
        if low_balance_threshold is not ...:
            prefs.low_balance_threshold_credits = low_balance_threshold
            _threshold_store(account.pk, low_balance_threshold)
        if emails is not None:
            off = set(prefs.emails_off) | {k for k, on in emails.items() if not on}
            prefs.emails_off = sorted(off - {k for k, on in emails.items() if on})
        prefs.save()
    return prefs


def _threshold_store(account_id: int, threshold: int | None) -> None:
    # Not available_credits: the balance trigger does not fire; the next movement compares the
    # balance with the new threshold (and balance_low says what was announced last).
    value = settings.LOW_BALANCE_THRESHOLD_CREDITS if threshold is None else threshold
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_account SET low_balance_threshold_credits = %s WHERE id = %s", [value, account_id]
        )


def default_threshold_apply(**kwargs: object) -> int:
    """Make LOW_BALANCE_THRESHOLD_CREDITS the column's default and the threshold of every account
    without its own (after each migrate). Returns how many accounts changed."""
    default = settings.LOW_BALANCE_THRESHOLD_CREDITS
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
            "WHERE d.adrelid = 'accounts_account'::regclass AND a.attname = 'low_balance_threshold_credits'"
        )
        row = cursor.fetchone()
        if row is None:
            return 0  # migrations not applied yet
        if row[0] != str(default):
            cursor.execute(
                f"ALTER TABLE accounts_account ALTER COLUMN low_balance_threshold_credits SET DEFAULT {int(default)}"
            )
        cursor.execute(
            "UPDATE accounts_account a SET low_balance_threshold_credits = %s "
            "WHERE a.low_balance_threshold_credits <> %s AND NOT EXISTS ("
            "SELECT 1 FROM notifications_notificationpreferences p "
            "WHERE p.account_id = a.id AND p.low_balance_threshold_credits IS NOT NULL)",
            [default, default],
        )
        return cursor.rowcount
