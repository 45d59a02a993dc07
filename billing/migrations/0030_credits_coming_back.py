"""Credits coming back to a lot (a hold released or lapsed, a debit refunded) go through
billing_give_back: to a voided lot they are voided at once (Grant.voided_at, set by
billing_take_back), and to the lot of a purchase that owes credits (a refund or dispute found them
spent or held: its unrecoverable_credits) they pay that first. A clawback of a purchase's lot is
counted on the purchase and pays what it owes first; a void of one is refused.

Rows from before: lots voided then get their voided_at from their first void entry, and a
purchase that owes credits while its lot has some again (credits that came back under the old
rule) takes them back now, through billing_take_back, as the rule would have done."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.utils import timezone

from billing import sql_functions

VOIDED_AT_FROM_ENTRIES = """
UPDATE billing_grant g SET voided_at = v.first
FROM (SELECT grant_id, min(created_at) AS first FROM billing_ledgerentry WHERE kind = 'void' GROUP BY grant_id) v
WHERE g.id = v.grant_id AND g.voided_at IS NULL
"""

OWING_WITH_CREDITS_LEFT = """
SELECT p.grant_id, p.public_id, least(p.unrecoverable_credits, g.remaining)
FROM billing_purchase p JOIN billing_grant g ON g.id = p.grant_id
WHERE p.unrecoverable_credits > 0 AND g.remaining > 0
ORDER BY p.id
"""


def purchases_repay(cursor: Any) -> int:
    """Take back what each purchase owes from the credits its lot has again; how many purchases."""
    cursor.execute(OWING_WITH_CREDITS_LEFT)
    owing = cursor.fetchall()
    for grant_id, public_id, credits in owing:
        cursor.execute(
            "SELECT * FROM billing_take_back(%s, %s, 'clawback', %s, %s, 'system', 'migration billing.0030')",
            [grant_id, credits, public_id, timezone.now()],
        )
    return len(owing)


def forward(apps: Any, schema_editor: Any) -> None:
    with schema_editor.connection.cursor() as cursor:
        purchases_repay(cursor)


class Migration(migrations.Migration):
    dependencies = [("billing", "0029_batch_in_parts")]

    operations = [
        migrations.AddField(model_name="grant", name="voided_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.RunSQL(VOIDED_AT_FROM_ENTRIES, migrations.RunSQL.noop),
        sql_functions.load("billing_give_back", "billing_hold_return", "billing_refund", "billing_take_back"),
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
