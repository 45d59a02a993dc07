"""Idempotency-Keys of service routes move to one scope, `svc`, shared by every service key
(accounts.authentication.SERVICE_SCOPE); until now each key had its own, `svc:<key id>`.

The recorded keys move with it, so a request recorded before the change still replays after it.
Where two service keys used the same key text (two requests that the shared scope now takes for
one), the first recorded moves and the others stay where they were until the retention purge:
they answer no request any more. One UPDATE: the keys table holds only the retention window."""

from django.db import migrations

MERGE = """
UPDATE billing_idempotencykey k SET scope = 'svc'
FROM (
    SELECT DISTINCT ON (key) id FROM billing_idempotencykey
    WHERE scope LIKE 'svc:%' ORDER BY key, created_at, id
) first
WHERE k.id = first.id
  AND NOT EXISTS (SELECT 1 FROM billing_idempotencykey s WHERE s.scope = 'svc' AND s.key = k.key)
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0023_spend_settle")]

    operations = [migrations.RunSQL(MERGE, migrations.RunSQL.noop)]
