"""Stripe for the fault tests: localstripe as its own process (our API opens real PaymentIntents
at it), pending purchases made by the app's own services, Stripe-shaped events signed with
Stripe's scheme, threads that deliver them to the live web server, and the state they left."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import stripe

from tests.billing.stripe_support import event
from tests.faults.harness import ROOT, manage, request

WEBHOOK_SECRET = "whsec_fault_tests_" + "w" * 24
SECRET_KEY = "sk_test_fault_tests_0123456789"
PACK = "credits-115"

Json = dict[str, Any]


class LocalStripe:
    """tests/billing/localstripe_server.py: a stateful Stripe API on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "billing" / "localstripe_server.py")],
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline().strip() or 0)
        assert port, self.log.read_text()[-3000:]
        self.url = f"http://127.0.0.1:{port}"
        try:
            urllib.request.urlopen(f"{self.url}/v1/customers", timeout=10)
        except urllib.error.HTTPError as answer:  # 401 without a key: it is answering
            assert answer.code == 401, answer

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass(frozen=True)
class Bought:
    """A pending purchase of ours and the Stripe ids its payment will have."""

    purchase: str
    account: str
    flow: str
    session: str | None  # cs_... (checkout flow)
    intent: str  # pi_...: ours from the start (payment_intent flow), or made by Checkout at payment
    charge: str
    amount_cents: int
    currency: str
    credits: int


# Accounts with a personal token each, to buy through the API; and pending Checkout purchases,
# made as purchase_start makes them once Stripe has answered the Checkout Session it asked for
# (localstripe has no Checkout): the purchase recorded, then the session's id stored on it.
SETUP = """
from accounts.services import user_token_create
from billing.services.purchases import StripeRefs, pack_get, purchase_record, purchase_refs_record
from tests.billing.factories import make_account
pack = pack_get(pack="{pack}")
print("PACK", pack.price_cents, pack.currency, pack.credits)
for _ in range({buyers}):
    account = make_account()
    print("BUYER", account.public_id, user_token_create(user=account.user)[1])
for n in range({checkouts}):
    purchase = purchase_record(account=make_account(), pack=pack, quantity=1, flow="checkout")
    session = "cs_test_faults_{tag}_%d" % n
    purchase_refs_record(purchase=purchase, refs=StripeRefs(checkout_session_id=session))
    print("CHECKOUT", purchase.public_id, purchase.account.public_id, session)
"""


def _new(prefix: str) -> str:
    return f"{prefix}faults{uuid.uuid4().hex[:20]}"


def purchases(env: dict[str, str], port: int, *, intents: int, checkouts: int) -> tuple[list[Bought], list[Bought]]:
    """Pending purchases of the pack, each on an account of its own: `intents` bought through
    POST /me/payment-intents (our API opens the PaymentIntent at localstripe), and `checkouts`
    Checkout purchases."""
    script = SETUP.format(pack=PACK, buyers=intents, checkouts=checkouts, tag=uuid.uuid4().hex[:8])
    printed = [line.split() for line in manage(env, "shell", "-c", script).stdout.splitlines()]
    ((cents, currency, credits),) = [line[1:] for line in printed if line[:1] == ["PACK"]]
    price = (int(cents), currency, int(credits))
    by_api = []
    for account, token in [line[1:] for line in printed if line[:1] == ["BUYER"]]:
        status, _, body = request(
            port, "POST", "/api/v1/me/payment-intents", {"pack": PACK}, {"Authorization": f"Bearer {token}"}
        )
        assert status == 201, body
        made = json.loads(body)
        by_api.append(Bought(made["purchase"], account, "payment_intent", None, made["id"], _new("ch_"), *price))
    by_checkout = [
        Bought(purchase, account, "checkout", session, _new("pi_"), _new("ch_"), *price)
        for purchase, account, session in [line[1:] for line in printed if line[:1] == ["CHECKOUT"]]
    ]
    assert (len(by_api), len(by_checkout)) == (intents, checkouts), printed
    return by_api, by_checkout


# --- Events, shaped as in Stripe's API reference --------------------------------------------------


def _metadata(bought: Bought) -> Json:
    return {"purchase": bought.purchase, "account": bought.account}


def session_completed(bought: Bought) -> Json:
    assert bought.session is not None
    session = {
        "id": bought.session,
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_subtotal": bought.amount_cents,
        "amount_total": bought.amount_cents,
        "currency": bought.currency,
        "client_reference_id": bought.purchase,
        "customer": "cus_faults",
        "metadata": _metadata(bought),
        "payment_intent": bought.intent,
        "livemode": False,
        "url": None,
    }
    return event("checkout.session.completed", session)


def intent_succeeded(bought: Bought) -> Json:
    intent = {
        "id": bought.intent,
        "object": "payment_intent",
        "amount": bought.amount_cents,
        "amount_received": bought.amount_cents,
        "currency": bought.currency,
        "status": "succeeded",
        "customer": "cus_faults",
        "latest_charge": bought.charge,
        # Ours names the purchase; Checkout's carries what its payment_intent_data set: the same.
        "metadata": _metadata(bought),
        "livemode": False,
    }
    return event("payment_intent.succeeded", intent)


def charge_refunded(bought: Bought, *, refunded_cents: int) -> Json:
    charge = {
        "id": bought.charge,
        "object": "charge",
        "amount": bought.amount_cents,
        "amount_captured": bought.amount_cents,
        "amount_refunded": refunded_cents,
        "currency": bought.currency,
        "paid": True,
        "status": "succeeded",
        "refunded": refunded_cents >= bought.amount_cents,
        "payment_intent": bought.intent,
        # A Checkout payment's charge carries its PaymentIntent's metadata; ours is found by the
        # PaymentIntent id we stored when we opened it.
        "metadata": _metadata(bought) if bought.flow == "checkout" else {},
        "livemode": False,
    }
    return event("charge.refunded", charge)


# --- Delivering ------------------------------------------------------------------------------------


@dataclass
class Deliveries:
    """Signed deliveries to POST /stripe/webhook from several threads, tallied: HTTP statuses,
    the `status` our webhook answered (processed, duplicate, ...), and each event's answers."""

    port: int
    threads: int = 8
    answers: Counter[int] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    by_event: dict[str, list[str]] = field(default_factory=dict)
    payloads: dict[str, Json] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, payload: Json) -> int:
        body = json.dumps(payload)
        # Stripe signs each attempt afresh: a redelivery has a new timestamp, the same body.
        signature = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        status, raw = post_signed(self.port, body, signature)
        reply = str(json.loads(raw).get("status", "")) if status == 200 else f"HTTP {status}"
        with self._lock:
            self.answers[status] += 1
            self.replies[reply] += 1
            self.by_event.setdefault(payload["id"], []).append(reply)
            self.payloads[payload["id"]] = payload
        return status

    def at_once(self, payloads: Iterable[Json]) -> list[int]:
        """Every payload delivered, `threads` at a time, in the order given."""
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(self.deliver, payloads))

    def sequences(self, sequences: Iterable[list[Json]]) -> None:
        """Each sequence delivered in its order, the sequences side by side on the threads."""
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda payloads: [self.deliver(p) for p in payloads], sequences))

    def unacknowledged(self) -> list[str]:
        """Events none of whose deliveries was answered 2xx: Stripe delivers these again."""
        return [event_id for event_id, replies in self.by_event.items() if all(r.startswith("HTTP") for r in replies)]

    def redeliver(self, rounds: int = 10) -> None:
        """Deliver each unacknowledged event again, as Stripe's retries do, until each is."""
        for _ in range(rounds):
            waiting = self.unacknowledged()
            if not waiting:
                return
            self.at_once(self.payloads[event_id] for event_id in waiting)
            time.sleep(0.5)

    @property
    def sent(self) -> int:
        return sum(self.answers.values())


def post_signed(port: int, body: str, signature: str) -> tuple[int, bytes]:
    """POST the body exactly as signed; (0, b"") when the connection failed or broke."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
        connection.request("POST", "/stripe/webhook", body.encode(), headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


# --- What the deliveries left --------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseState:
    status: str
    refunded_cents: int
    clawed_back_credits: int
    unrecoverable_credits: int
    purchase_grants: int  # grants of source purchase on the account (one account per purchase)
    grant_entries: int  # ledger grant entries for the purchase
    clawback_entries: int
    clawed_back_by_entries: int  # credits the clawback entries took
    available_credits: int


STATE = """
SELECT p.public_id, p.status, p.refunded_cents, p.clawed_back_credits, p.unrecoverable_credits,
       (SELECT count(*) FROM billing_grant g WHERE g.account_id = a.id AND g.source = 'purchase'),
       (SELECT count(*) FROM billing_ledgerentry e WHERE e.account_id = a.id AND e.kind = 'grant'
          AND e.reference = p.public_id),
       (SELECT count(*) FROM billing_ledgerentry e WHERE e.account_id = a.id AND e.kind = 'clawback'),
       (SELECT coalesce(-sum(e.credits), 0) FROM billing_ledgerentry e WHERE e.account_id = a.id
          AND e.kind = 'clawback'),
       a.available_credits
  FROM billing_purchase p JOIN accounts_account a ON a.id = p.account_id
 WHERE p.public_id = ANY(%s)
"""


def states(postgres_url: str, bought: list[Bought]) -> dict[str, PurchaseState]:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute(STATE, ([b.purchase for b in bought],)).fetchall()
    found = {row[0]: PurchaseState(*row[1:]) for row in rows}
    assert len(found) == len(bought)
    return found


def events_by_status(postgres_url: str) -> dict[str, int]:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute("SELECT status, count(*) FROM billing_stripeevent GROUP BY status").fetchall()
    return {status: count for status, count in rows}


def stored_unprocessed(postgres_url: str, payload: Json, *, seconds_ago: float) -> None:
    """The event as a delivery that died after storing it left it: stored, still `received`."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO billing_stripeevent (stripe_event_id, type, api_version, livemode, payload, status, error,"
            " received_at, attempts) VALUES (%s, %s, %s, false, %s, 'received', '',"
            " now() - make_interval(secs => %s), 0)",
            (payload["id"], payload["type"], payload["api_version"], json.dumps(payload), seconds_ago),
        )
