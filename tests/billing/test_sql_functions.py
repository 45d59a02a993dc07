"""The money engine's functions run exactly the texts of their files in billing/sql/."""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction

from billing import sql_functions

pytestmark = pytest.mark.django_db

SCRATCH = "billing_sql_scratch"


def definitions(schema: str, name: str) -> list[str]:
    """pg_get_functiondef() of every function of this name in `schema`, its schema's name removed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = %s AND n.nspname = %s ORDER BY p.oid",
            [name, schema],
        )
        return [row[0].replace(f"{schema}.", "") for row in cursor.fetchall()]


def from_file(name: str) -> list[str]:
    """The definition the file makes, made in a scratch schema that is rolled back."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {SCRATCH}")
            cursor.execute(f"SET LOCAL search_path = {SCRATCH}, public")
            sql_functions.install(cursor, name)
        made = definitions(SCRATCH, name)
        transaction.set_rollback(True)
    return made


@pytest.mark.parametrize("name", sql_functions.names())
def test_the_database_runs_the_text_of_the_file(name):
    live = definitions("public", name)
    assert len(live) == 1, f"{name}: {len(live)} functions of that name"
    assert live == from_file(name)


def test_every_billing_function_has_a_file_and_every_file_one_function():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace "
            "AND p.proname LIKE 'billing\\_%%' ORDER BY 1"
        )
        live = [row[0] for row in cursor.fetchall()]
    assert live == sql_functions.names()
    for name in sql_functions.names():
        made = re.findall(r"CREATE OR REPLACE FUNCTION (\w+)\(", sql_functions.source(name))
        assert made == [name], f"{name}.sql makes {made}"


def test_a_changed_definition_is_noticed():
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION billing_expired(p_expires_at timestamptz, p_at timestamptz) "
                "RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT p_expires_at < p_at $$"
            )
        assert definitions("public", "billing_expired") != from_file("billing_expired")
        transaction.set_rollback(True)


@pytest.mark.parametrize(
    "expression",
    [
        "billing_expired(g.expires_at, %(now)s)",
        "billing_free_due(a.status, a.free_period_start, a.first_period_start, a.period_anchor_day, %(now)s)",
        "billing_free_credits(a.first_period_start,"
        " billing_period_start(a.first_period_start, a.period_anchor_day, %(now)s), 50, 15)",
        "billing_period_index(a.first_period_start, a.free_period_start)",
        "billing_period_end(a.first_period_start)",
    ],
)
def test_the_rule_fragments_are_inlined_where_the_jobs_and_reads_use_them(expression):
    """The refill and the balance read use these per row: a fragment the planner does not inline is
    called once per row, several times the cost (bench/README.md, the refill's PostgreSQL CPU)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (VERBOSE) SELECT {expression} FROM accounts_account a "
            "JOIN billing_grant g ON g.account_id = a.id",
            {"now": "2027-03-15T10:00:00Z"},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "billing_" not in plan.replace("billing_grant", "").replace("billing_billingpolicy", ""), plan
