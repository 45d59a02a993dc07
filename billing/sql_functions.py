"""The money engine's PostgreSQL functions, whose sources are the files in billing/sql/.

A migration that adds or changes a file loads it with `load(name, ...)`. Function bodies are not
checked against the schema while they load (check_function_bodies off), so a fresh database
can load today's text at an early migration; every function of the same name is dropped first,
so a file may change a function's arguments. tests/billing/test_sql_functions.py checks that the
database runs exactly the files' texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"


def names() -> list[str]:
    """Every function with a source file."""
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def source(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def install(cursor: Any, *functions: str) -> None:
    cursor.execute("SET LOCAL check_function_bodies = off")
    for name in functions:
        drop(cursor, name)
        cursor.execute(source(name))


def drop(cursor: Any, name: str) -> None:
    cursor.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname = %s "
        "AND p.pronamespace = current_schema()::regnamespace",
        [name],
    )
    for (signature,) in cursor.fetchall():
        cursor.execute(f"DROP FUNCTION {signature}")


def load(*functions: str, replaces: dict[str, str] | None = None) -> migrations.RunPython:
    """A migration step that loads these files; reversed, it drops them and runs `replaces`
    (name: the text the function had before), when given."""

    def forward(apps: Any, schema_editor: Any) -> None:
        with schema_editor.connection.cursor() as cursor:
            install(cursor, *functions)

    def backward(apps: Any, schema_editor: Any) -> None:
        with schema_editor.connection.cursor() as cursor:
            for name in functions:
                drop(cursor, name)
            for text in (replaces or {}).values():
                cursor.execute(text)

    return migrations.RunPython(forward, backward)
