"""Public ids of grants, ledger entries, users and service keys: the row id put through a keyed
permutation (accounts/ids.py), the same in Python and in PostgreSQL (billing_public_id)."""

from __future__ import annotations

import json
import random
import re

import pytest
from django.db import connection
from django.utils import timezone

from accounts.ids import ROW_ID_LIMIT, row_id_keys, row_id_of, row_public_id

SAMPLE = [
    0,
    1,
    2,
    3,
    61,
    62,
    1000,
    2**31 - 1,
    2**31,
    2**32 + 7,
    2**62 - 1,
    *random.Random(17).sample(range(2**62), 200),
]


def test_an_id_is_the_prefix_and_sixteen_hex_digits_and_names_its_row_back():
    for row_id in SAMPLE:
        public = row_public_id("le_", row_id)
        assert re.fullmatch(r"le_[0-9a-f]{16}", public), public
        assert row_id_of("le_", public) == row_id


def test_different_rows_get_different_ids_that_do_not_count_up():
    ids = [row_public_id("grt_", n) for n in range(1, 5001)]
    assert len(set(ids)) == len(ids)
    # Consecutive rows do not get neighbouring ids: sorted, they are not in row order.
    assert sorted(ids) != ids
    assert all(str(n) not in public for n, public in zip(range(1000, 1100), ids[999:1099], strict=True))


def test_each_type_has_its_own_ids_for_the_same_row():
    bodies = {row_public_id(prefix, 7).split("_", 1)[1] for prefix in ("grt_", "le_", "usr_", "key_", "cur_")}
    assert len(bodies) == 5


def test_the_id_depends_on_the_deployments_key(settings):
    before = row_public_id("usr_", 42)
    settings.PUBLIC_ID_KEY = "another deployment's public id key"
    assert row_public_id("usr_", 42) != before
    assert row_id_of("usr_", before) != 42


@pytest.mark.parametrize(
    "text",
    [
        "",
        "le_",
        "le_000000000000000",  # too short
        "le_00000000000000000",  # too long
        "grt_0000000000000000",  # another type's
        "le_000000000000000!",
        "le_000000000000000A",  # ids are written in lower case
        "le_4000000000000000",  # past the id range (2**62)
        "le_Å00000000000000",
        "le_ 000000000000000",
    ],
)
def test_anything_else_names_no_row(text):
    assert row_id_of("le_", text) is None


def test_row_ids_out_of_range_have_no_public_id():
    for bad in (-1, ROW_ID_LIMIT):
        with pytest.raises(ValueError):
            row_public_id("le_", bad)


@pytest.mark.django_db
def test_postgresql_writes_the_same_ids_as_python():
    keys = list(row_id_keys("grt_"))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n, billing_public_id('grt_', n, %s::bigint[]) FROM unnest(%s::bigint[]) n", [keys, SAMPLE]
        )
        made = dict(cursor.fetchall())
        cursor.execute("SELECT billing_public_id('grt_', %s, %s::bigint[])", [ROW_ID_LIMIT, keys])
        assert cursor.fetchone()[0] is None
    assert made == {n: row_public_id("grt_", n) for n in SAMPLE}


@pytest.mark.django_db
def test_the_balance_names_its_lots_by_the_deployments_key(settings):
    """billing.selectors writes the grant ids' keys into the balance statement: a deployment with
    another key reads its own ids."""
    from billing.selectors import balance_json
    from billing.services.ledger import Actor, grant_create
    from tests.billing.factories import make_account

    account = make_account()
    actor = Actor.system("test")
    grant = grant_create(account=account, source="adjustment", credits=5, expires_at=None, actor=actor, reason="t")
    for key in ("the first deployment's key", "another deployment's public id key"):
        settings.PUBLIC_ID_KEY = key
        lots = json.loads(balance_json(account.public_id, timezone.now()))["grants"]
        assert row_public_id("grt_", grant.pk) in [lot["id"] for lot in lots]
