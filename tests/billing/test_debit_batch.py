"""POST /api/v1/debits/batch: many debits in one transaction, each made or refused on its own."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Account
from billing.models import Debit, IdempotencyKey, LedgerEntry
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db

BATCH = "/debits/batch"


def item(account: Account | str, key: str, **fields):  # type: ignore[no-untyped-def]
    public_id = account if isinstance(account, str) else account.public_id
    body = {"credits": 1, "reference": f"ref-{key}"}
    body.update(fields)
    return {"account_id": public_id, "idempotency_key": key, **body}


def data_statements(queries) -> list[str]:  # type: ignore[no-untyped-def]
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    return [q["sql"] for q in queries if not q["sql"].startswith(control)]


def post_batch(api, debits, **kwargs):  # type: ignore[no-untyped-def]
    return api.post(BATCH, {"debits": debits}, idem=None, **kwargs)


def results_of(response):  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_each_item_is_made_or_refused_on_its_own(api, assert_ledger_clean):
    rich = make_account()
    give(rich, 5)
    poor = make_account()
    give(poor, 1)
    suspended = make_account(status=Account.Status.SUSPENDED)
    give(suspended, 5)
    debits = [
        item(rich, "a1", credits=2),
        item(poor, "p1"),
        item(rich, "a2", operation="generation", reference="gen"),
        item(poor, "p2"),  # the first took poor's only credit
        item("acct_doesnotexist", "x1"),
        item(suspended, "s1"),
        item(rich, "bad", credits=0),
        item(rich, "op", operation="no-such-operation"),
    ]
    for with_operation in (debits[2], debits[7]):
        del with_operation["credits"]
    results = results_of(post_batch(api, debits))

    assert [r["status"] for r in results] == [201, 201, 201, 402, 404, 403, 400, 400]
    assert [r["idempotency_key"] for r in results] == ["a1", "p1", "a2", "p2", "x1", "s1", "bad", "op"]
    assert not any(r["replayed"] for r in results)
    # Running balances, as if the items had been sent one by one in this order.
    assert results[0]["body"]["balance"] == {"available": 3, "held": 0}
    assert results[2]["body"]["balance"] == {"available": 2, "held": 0}
    assert results[2]["body"]["credits"] == 1 and results[2]["body"]["operation"] == "generation"
    assert results[1]["body"]["balance"] == {"available": 0, "held": 0}
    assert results[3]["body"]["error"] == {
        "code": "insufficient_credits",
        "message": results[3]["body"]["error"]["message"],
        "available": 0,
        "requested": 1,
    }
    assert results[4]["body"]["error"]["code"] == "not_found"
    assert results[5]["body"]["error"]["code"] == "account_suspended"
    assert results[6]["body"]["error"]["code"] == "validation_error"
    assert "credits" in results[6]["body"]["error"]["fields"]
    assert results[7]["body"]["error"]["code"] == "validation_error"

    rich.refresh_from_db()
    poor.refresh_from_db()
    suspended.refresh_from_db()
    assert (rich.available_credits, poor.available_credits, suspended.available_credits) == (2, 0, 5)
    assert Debit.objects.filter(account=rich).count() == 2
    assert set(Debit.objects.values_list("public_id", flat=True)) == {results[i]["body"]["id"] for i in (0, 1, 2)}
    # Successes and business refusals are stored under their keys; bad input and unknown
    # accounts are not, so a corrected retry can still use the key.
    assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {"a1", "p1", "a2", "p2", "s1"}
    assert_ledger_clean()


def test_a_retried_batch_replays_and_moves_nothing_more(api, assert_ledger_clean):
    acct = make_account()
    give(acct, 3)
    debits = [item(acct, f"k{i}") for i in range(5)]  # 3 succeed, 2 are refused
    first = results_of(post_batch(api, debits))
    assert [r["status"] for r in first] == [201, 201, 201, 402, 402]
    give(acct, 10)  # credits arrive: the stored refusals still replay as refusals

    again = results_of(post_batch(api, debits))
    assert [r["status"] for r in again] == [201, 201, 201, 402, 402]
    assert all(r["replayed"] for r in again)
    assert [r["body"] for r in again] == [r["body"] for r in first]
    acct.refresh_from_db()
    assert acct.available_credits == 10
    assert Debit.objects.count() == 3
    assert_ledger_clean()


def test_a_batch_item_and_a_single_call_with_the_same_key_are_one_request(api, account):
    single = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"}, idem="shared")
    assert single.status_code == 201
    results = results_of(
        post_batch(api, [item(account, "shared", reference="r"), item(account, "other-body", reference="r")])
    )
    assert results[0]["status"] == 201 and results[0]["replayed"] is True
    assert results[0]["body"] == single.json()
    # The same key with a different body is a reused key, in either direction.
    changed = results_of(post_batch(api, [item(account, "shared", reference="changed")]))
    assert changed[0]["status"] == 409
    assert changed[0]["body"]["error"]["code"] == "idempotency_key_reused"
    back = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"}, idem="other-body")
    assert back.status_code == 201 and back.headers["Idempotent-Replayed"] == "true"
    assert Debit.objects.count() == 2


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"debits": []},
        {"debits": "x"},
        {"debits": [1]},
        {"debits": [{"account_id": "acct_x", "idempotency_key": "k", "credits": 1, "reference": "r"}] * 2},
        {"debits": [{}] * 1001},
        {"debits": [], "extra": 1},
        {},
    ],
)
def test_a_malformed_batch_is_refused_whole(api, account, body):
    response = api.post(BATCH, body, idem=None)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert Debit.objects.count() == 0 and IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize("padded", [" k", "k ", "\tk"])
def test_a_key_with_spaces_at_either_end_is_refused_not_taken_as_another(api, padded, assert_ledger_clean):
    account = make_account()
    give(account, 10)
    items = [
        {"account_id": account.public_id, "idempotency_key": "k", "credits": 1, "reference": "a"},
        {"account_id": account.public_id, "idempotency_key": padded, "credits": 1, "reference": "a"},
    ]
    response = api.post(BATCH, {"debits": items}, idem=None)
    assert response.status_code == 200, response.content
    made, refused = response.json()["results"]
    assert (made["idempotency_key"], made["status"]) == ("k", 201)
    assert (refused["idempotency_key"], refused["status"]) == (padded, 400)
    assert list(refused["body"]["error"]["fields"]) == ["idempotency_key"]
    assert Debit.objects.count() == 1 and IdempotencyKey.objects.count() == 1
    assert_ledger_clean()


def test_batch_callers_are_services_and_bodies_have_a_limit(api, anon, user_api, account, settings):
    assert post_batch(anon, [item(account, "k")]).status_code == 401
    assert post_batch(user_api[0], [item(account, "k")]).status_code == 403
    settings.BATCH_MAX_BODY_BYTES = 64 * 1024
    big = [item(account, f"k{i}", metadata={"pad": "x" * 200}) for i in range(400)]
    response = post_batch(api, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert Debit.objects.count() == 0


def test_a_batch_of_a_thousand_is_allowed_and_is_a_handful_of_statements(api, assert_ledger_clean):
    accounts = [make_account() for _ in range(50)]
    for acct in accounts:
        give(acct, 25)
    debits = [item(accounts[i % 50], f"big-{i}") for i in range(1000)]
    api.get(f"/accounts/{accounts[0].public_id}/balance")  # caches the service key
    with CaptureQueriesContext(connection) as queries:
        results = results_of(post_batch(api, debits))
    assert [r["status"] for r in results] == [201] * 1000
    # Stored keys, account locks, lots, debits, one posting, keys: a fixed number of
    # statements whatever the batch size (no query per item or per account).
    statements = data_statements(queries)
    assert len(statements) <= 6, "\n".join(s[:120] for s in statements)
    assert LedgerEntry.objects.filter(kind="debit").count() == 1000
    assert all(a.available_credits == 5 for a in Account.objects.filter(pk__in=[a.pk for a in accounts]))
    assert_ledger_clean()


def test_a_batch_settles_accounts_with_lapsed_holds_and_due_free_credits(api, assert_ledger_clean):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from billing.services.ledger import Actor, hold_create

    holder = make_account()
    give(holder, 2)
    hold_create(account=holder, credits=2, expires_in=60, actor=Actor.system("test"))
    fresh = make_account(free=True)  # no free grant yet: the batch grants it lazily
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        results = results_of(post_batch(api, [item(holder, "h1", credits=2), item(fresh, "f1")]))
    assert [r["status"] for r in results] == [201, 201], results
    assert results[0]["body"]["balance"] == {"available": 0, "held": 0}
    assert results[1]["body"]["balance"]["available"] == 49
    assert_ledger_clean()


def test_a_single_debit_is_a_handful_of_statements(api, account):
    path = f"/accounts/{account.public_id}/debits"
    api.post(path, {"credits": 1, "reference": "warm"})  # caches the service key
    with CaptureQueriesContext(connection) as queries:
        response = api.post(path, {"credits": 1, "reference": "r"})
    assert response.status_code == 201
    # Lock the account by public id, its lots, the debit, one posting, the key.
    statements = data_statements(queries)
    assert len(statements) <= 5, "\n".join(s[:120] for s in statements)
    # One transaction and no savepoint of its own (here it is one, inside the test's transaction).
    assert sum(q["sql"].startswith("SAVEPOINT") for q in queries) == 1


# --- The batch's serializer-free check of plain items -------------------------------------------

PLAIN = {"account_id": "acct_abc", "idempotency_key": "k-1", "credits": 3, "reference": "gen-1"}
TRICKY_VALUES = [
    "",
    " x",
    "x ",
    "a\x00b",
    "a\tb",
    "a\nb",
    "\ud800",
    "é",
    "x" * 64,
    "x" * 65,
    "x" * 255,
    "x" * 256,
    0,
    1,
    True,
    None,
    1.0,
    -1,
    1_000_000,
    1_000_001,
    [],
    {},
    "gen-1",
    "Generation_2",
    "gén",
]


def _variants():  # type: ignore[no-untyped-def]
    yield dict(PLAIN)
    yield {**{k: v for k, v in PLAIN.items() if k != "credits"}, "operation": "generation"}
    yield {**PLAIN, "operation": "generation"}
    yield {**PLAIN, "metadata": {"a": 1}}
    yield {**PLAIN, "extra": 1}
    for missing in PLAIN:
        yield {k: v for k, v in PLAIN.items() if k != missing}
    for field in [*PLAIN, "operation"]:
        for value in TRICKY_VALUES:
            base = dict(PLAIN)
            if field == "operation":
                del base["credits"]
            yield {**base, field: value}
    yield "not a dict"
    yield ["list"]


def assert_fast_subset(fast_check, serializer_class, raw):  # type: ignore[no-untyped-def]
    """Whatever the fast check accepts, the serializer accepts with the same validated data."""
    fast = fast_check(raw)
    serializer = serializer_class(data=raw)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, (raw, serializer.errors)
        assert dict(serializer.validated_data) == fast


@pytest.mark.parametrize("raw", list(_variants()))
def test_the_fast_item_check_accepts_only_what_the_serializer_accepts(raw):
    from billing.serializers import DebitBatchItem, batch_item_fast

    assert_fast_subset(batch_item_fast, DebitBatchItem, raw)


@pytest.mark.parametrize("raw", list(_variants()))
def test_the_fast_body_check_accepts_only_what_the_serializer_accepts(raw):
    from billing.serializers import DebitRequest, debit_request_fast

    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k not in ("account_id", "idempotency_key")}
    assert_fast_subset(debit_request_fast, DebitRequest, raw)


def test_the_fast_item_check_takes_the_common_items():
    from billing.serializers import batch_item_fast

    assert batch_item_fast(PLAIN) == PLAIN
    with_operation = {k: v for k, v in PLAIN.items() if k != "credits"} | {"operation": "generation"}
    assert batch_item_fast(with_operation) == with_operation
    from billing.serializers import debit_request_fast

    assert debit_request_fast({"credits": 1, "reference": "r"}) == {"credits": 1, "reference": "r"}
