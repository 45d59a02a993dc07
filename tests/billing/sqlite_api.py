"""Run by test_sqlite_concurrency in its own process: the service API on the embedded SQLite.

`make run` serves the API from SQLite; the PostgreSQL-only statements (one-statement postings,
array parameters) have SQLite paths, and this drives each of them through HTTP. Prints one
JSON line with what happened.
"""

from __future__ import annotations

import json

import django


def main() -> None:
    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from accounts.services import service_key_create
    from billing.integrity import ledger_breaches
    from tests.billing.factories import give, make_account

    call_command("migrate", verbosity=0)
    rich, poor = make_account(), make_account()
    give(rich, 10)
    give(poor, 1)
    _, key = service_key_create(name="sqlite")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="localhost")

    def post(path: str, body: dict, idem: str | None = None):  # type: ignore[no-untyped-def]
        headers = {"HTTP_IDEMPOTENCY_KEY": idem} if idem else {}
        return client.post(f"/api/v1{path}", body, content_type="application/json", **headers)

    out: dict = {}
    first = post(f"/accounts/{rich.public_id}/debits", {"credits": 2, "reference": "a"}, "d1")
    again = post(f"/accounts/{rich.public_id}/debits", {"credits": 2, "reference": "a"}, "d1")
    out["debit"] = [first.status_code, again.status_code, again.headers.get("Idempotent-Replayed")]
    out["same_debit"] = first.json()["id"] == again.json()["id"]
    hold = post(f"/accounts/{rich.public_id}/holds", {"credits": 3, "reference": "h"}, "h1")
    capture = post(f"/holds/{hold.json()['id']}/capture", {"credits": 1}, "c1")
    out["hold"] = [hold.status_code, capture.status_code, capture.json()["status"]]
    items = [
        {"account_id": rich.public_id, "idempotency_key": "d1", "credits": 2, "reference": "a"},
        {"account_id": poor.public_id, "idempotency_key": "b1", "credits": 1, "reference": "b"},
        {"account_id": poor.public_id, "idempotency_key": "b2", "credits": 1, "reference": "b"},
        {"account_id": "acct_missing", "idempotency_key": "b3", "credits": 1, "reference": "b"},
    ]
    batch = client.post("/api/v1/debits/batch", {"debits": items}, content_type="application/json")
    results = batch.json()["results"]
    out["batch"] = [batch.status_code, [(r["status"], r["replayed"]) for r in results]]
    balance = client.get(f"/api/v1/accounts/{rich.public_id}/balance").json()
    out["balance"] = [balance["available"], balance["held"]]
    out["breaches"] = [str(b) for b in ledger_breaches()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
