"""POST /api/v1/waitlist: 201 new, 200 already there (waiting or invited), 400 malformed in the
documented error shape, 429 per client address."""

from __future__ import annotations

import json

import pytest

from tests.concurrency import run_concurrently
from tests.conftest import Api
from waitlist.models import WaitlistEntry
from waitlist.services import entries_admit

pytestmark = pytest.mark.django_db


def join(anon, body, *, addr="198.51.100.7", **kwargs):
    return anon.client.post(
        "/api/v1/waitlist",
        json.dumps(body) if not isinstance(body, str) else body,
        content_type="application/json",
        REMOTE_ADDR=addr,
        **kwargs,
    )


def test_a_new_email_joins_with_201(anon):
    response = join(anon, {"email": "Ada@Example.com "})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email"] == "ada@example.com" and body["status"] == "waiting"
    assert WaitlistEntry.objects.get().email == "ada@example.com"


def test_an_email_already_waiting_gets_200_and_its_first_entry(anon):
    first = join(anon, {"email": "ada@example.com"}).json()
    again = join(anon, {"email": "ADA@example.com"})
    assert again.status_code == 200
    assert again.json() == first
    assert WaitlistEntry.objects.count() == 1


def test_an_invited_email_is_told_so(anon):
    join(anon, {"email": "ada@example.com"})
    entries_admit(entry_ids=WaitlistEntry.objects.values_list("pk", flat=True), by="ops@example.com")
    again = join(anon, {"email": "ada@example.com"})
    assert again.status_code == 200 and again.json()["status"] == "invited"


def test_a_skipped_entry_still_reads_as_waiting(anon):
    join(anon, {"email": "ada@example.com"})
    WaitlistEntry.objects.update(status=WaitlistEntry.Status.SKIPPED)
    assert join(anon, {"email": "ada@example.com"}).json()["status"] == "waiting"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({}, "email"),
        ({"email": 42}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"email": "ada@example.com", "name": "Ada"}, "name"),
    ],
)
def test_malformed_input_is_a_400_validation_error(anon, body, field):
    response = join(anon, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"] and error["message"].startswith(f"{field}:")
    assert not WaitlistEntry.objects.exists()


def test_a_body_that_is_not_json_is_a_400(anon):
    response = join(anon, "{not json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


def test_joining_is_limited_per_client_address(anon, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "waitlist": 3}
    answers = [join(anon, {"email": f"p{n}@example.com"}).status_code for n in range(5)]
    assert answers == [201, 201, 201, 429, 429]
    refused = join(anon, {"email": "late@example.com"})
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert not WaitlistEntry.objects.filter(email="late@example.com").exists()
    # Another address has its own budget.
    assert join(anon, {"email": "other@example.com"}, addr="203.0.113.9").status_code == 201


def test_the_route_is_in_the_schema(anon):
    schema = anon.client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/v1/waitlist" in schema


@pytest.mark.django_db(transaction=True)
def test_two_joins_racing_with_one_email_make_one_entry():
    statuses = run_concurrently(2, lambda i: join(Api(), {"email": "ada@example.com"}).status_code)
    assert sorted(statuses) == [200, 201]
    assert WaitlistEntry.objects.count() == 1
