"""Two functions that make the balance read's statement (billing.selectors._BALANCE_JSON) cheaper
for PostgreSQL to run, with the same answers.

- billing_iso() writes a timestamp with one to_char() and a replace(), where 0009's version used
  two to_char() calls, an extract() and a CASE: the same text (ISO 8601 in UTC, microseconds only
  when there are any, "Z"), about 1 µs less per lot written.
- billing_lapsed_hold(account, at): whether the account has a pending hold past its expiry. As an
  EXISTS subquery in the statement, its plan node was set up on every execution (about 2 µs),
  although it only runs for an account with held credits; a function call costs nothing until it
  is made, and PL/pgSQL keeps its query's plan.
"""

from importlib import import_module

from django.db import migrations

_PREVIOUS_ISO = import_module("billing.migrations.0009_capture_function").ISO_FUNCTION

ISO_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_iso(value timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT replace(to_char(value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')
$$;
"""

LAPSED_HOLD_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_lapsed_hold(p_account bigint, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM billing_hold h
                   WHERE h.account_id = p_account AND h.status = 'pending' AND h.expires_at <= p_at);
END
$$;
"""


def create_functions(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ISO_FUNCTION)
        schema_editor.execute(LAPSED_HOLD_FUNCTION)


def restore_functions(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS billing_lapsed_hold(bigint, timestamptz)")
        schema_editor.execute(_PREVIOUS_ISO)


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_grant_spendable_column")]

    operations = [migrations.RunPython(create_functions, restore_functions)]
