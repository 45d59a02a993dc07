"""Stripe webhooks against the live production web server (gunicorn on a private PostgreSQL and
Redis, `make test-faults`): signed Stripe-shaped events delivered many times over, out of order
and from several threads at once, as Stripe's at-least-once delivery may. Every purchase must be
granted exactly once, every refund taken back exactly once, no delivery may be answered 5xx, and
check_ledger must pass. The figures of each run are written to tests/artifacts/faults.txt."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from billing.services.stripe_events import UNFINISHED_AFTER
from tests.faults.harness import WebServer, check_ledger, environment, manage, report
from tests.faults.stripe_harness import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    Bought,
    Deliveries,
    LocalStripe,
    PurchaseState,
    charge_refunded,
    events_by_status,
    intent_succeeded,
    purchases,
    session_completed,
    states,
    stored_unprocessed,
)
from tests.private_servers import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

COPIES = 5  # deliveries of each event in the concurrent bursts
# Stripe delivers an unanswered event again a minute or more later; the test waits only until
# the webhook takes an event left unprocessed for one whose delivery died.
REDELIVERY_DELAY_SECONDS = UNFINISHED_AFTER.total_seconds() + 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[dict[str, str], WebServer]]:  # type: ignore[no-untyped-def]
    logs = tmp_path_factory.mktemp("stripe-faults")
    postgres, redis, localstripe = PrivatePostgres(), PrivateRedis(), LocalStripe(logs / "localstripe.log")
    postgres.start()
    redis.start()
    localstripe.start()
    web = None
    try:
        env = environment(
            postgres,
            redis,
            STRIPE_SECRET_KEY=SECRET_KEY,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=localstripe.url,
            RATE_LIMIT_USER_PER_MINUTE="0",
        )
        done = manage(env, "migrate", "--noinput", check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        web = WebServer(env, logs / "gunicorn.log")
        web.start()
        yield env, web
    finally:
        if web is not None:
            web.stop()
        localstripe.stop()
        redis.stop()
        postgres.destroy()


def shuffled(payloads: list[dict], seed: int) -> list[dict]:
    random.Random(seed).shuffle(payloads)
    return payloads


def notes(postgres_url: str, event_ids: list[str]) -> dict[str, int]:
    """What processing recorded on the stored events: how many granted, how many found the
    purchase paid already, and so on (the first words of each note)."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        rows = db.execute(
            "SELECT status, split_part(error, ' ', 1), count(*) FROM billing_stripeevent"
            " WHERE stripe_event_id = ANY(%s) GROUP BY 1, 2",
            (event_ids,),
        ).fetchall()
    return {f"{status} {word}".strip(): count for status, word, count in rows}


def record(name: str, deliveries: Deliveries, found: dict[str, PurchaseState], ledger: str) -> None:
    grants = sum(state.purchase_grants for state in found.values())
    clawbacks = sum(state.clawback_entries for state in found.values())
    clawed = sum(state.clawed_back_by_entries for state in found.values())
    line = (
        f"Stripe webhooks, {name}: {deliveries.sent} deliveries of {len(deliveries.by_event)} events for "
        f"{len(found)} purchases; answers {sorted(deliveries.answers.items())}; replies "
        f"{sorted(deliveries.replies.items())}; grants {grants}; clawback entries {clawbacks} "
        f"({clawed} credits); check_ledger: {ledger}"
    )
    report(line)


def assert_each_event_processed_once(deliveries: Deliveries) -> None:
    """Whatever the number of copies, one delivery of each event processed it and the others
    were acknowledged as duplicates; none answered other than 200."""
    assert set(deliveries.answers) == {200}, deliveries.answers
    for event_id, replies in deliveries.by_event.items():
        assert replies.count("processed") == 1 and set(replies) <= {"processed", "duplicate"}, (event_id, replies)


def test_each_payment_event_delivered_five_times_at_once_grants_exactly_once(stack):
    env, web = stack
    intents, checkouts = purchases(env, web.port, intents=20, checkouts=20)
    bought = intents + checkouts
    paid = [session_completed(b) if b.flow == "checkout" else intent_succeeded(b) for b in bought]
    deliveries = Deliveries(web.port)

    deliveries.at_once(shuffled([payload for payload in paid for _ in range(COPIES)], seed=1))
    # A Checkout payment's PaymentIntent reports its success too, after the session did.
    late = [intent_succeeded(b) for b in bought if b.flow == "checkout"]
    deliveries.at_once(shuffled([payload for payload in late for _ in range(2)], seed=2))

    assert_each_event_processed_once(deliveries)
    assert deliveries.sent == len(paid) * COPIES + len(late) * 2
    assert notes(env["DATABASE_URL"], [p["id"] for p in paid]) == {"processed granted": len(bought)}
    assert notes(env["DATABASE_URL"], [p["id"] for p in late]) == {"processed already": len(late)}
    found = states(env["DATABASE_URL"], bought)
    for purchase, state in found.items():
        assert state == PurchaseState("paid", 0, 0, 0, 1, 1, 0, 0, 115), purchase
    ledger = check_ledger(env)
    record("each payment event 5 times at once", deliveries, found, ledger)


def refunded_in_full(bought: list[Bought], env: dict[str, str]) -> dict[str, PurchaseState]:
    found = states(env["DATABASE_URL"], bought)
    for purchase, state in found.items():
        # One grant of 115 and one clawback of all 115: nothing left on the account.
        assert state == PurchaseState("refunded", 1500, 115, 0, 1, 1, 1, 115, 0), purchase
    return found


def test_a_refund_that_overtakes_its_payment_grants_once_and_claws_back_once(stack):
    env, web = stack
    intents, checkouts = purchases(env, web.port, intents=10, checkouts=10)
    deliveries = Deliveries(web.port)

    # Each purchase's events in the wrong order, delivered twice each, the purchases side by side:
    # the refund first, then the payment's own events (Checkout's session, then its PaymentIntent).
    def overtaken(b: Bought) -> list[dict]:
        refund = charge_refunded(b, refunded_cents=b.amount_cents)
        payment = [session_completed(b), intent_succeeded(b)] if b.flow == "checkout" else [intent_succeeded(b)]
        return [copy for payload in [refund, *payment] for copy in (payload, payload)]

    sequences = [overtaken(b) for b in intents + checkouts]
    deliveries.sequences(sequences)

    assert_each_event_processed_once(deliveries)
    refunds = [sequence[0]["id"] for sequence in sequences]
    payments = [payload["id"] for sequence in sequences for payload in sequence[2::2]]
    # The early refund granted first, so that its clawback had a lot; the payment then found the
    # purchase refunded and granted nothing.
    assert notes(env["DATABASE_URL"], refunds) == {"processed refunded": len(refunds)}
    assert notes(env["DATABASE_URL"], payments) == {"processed already": len(payments)}
    found = refunded_in_full(intents + checkouts, env)
    record("refund before its payment, each event twice", deliveries, found, check_ledger(env))


def test_a_refund_racing_its_payment_ends_the_same_whichever_wins(stack):
    env, web = stack
    intents, checkouts = purchases(env, web.port, intents=10, checkouts=10)
    bought = intents + checkouts
    deliveries = Deliveries(web.port)

    racing, payments = [], []
    for b in bought:
        payments.append(session_completed(b) if b.flow == "checkout" else intent_succeeded(b))
        racing += [charge_refunded(b, refunded_cents=b.amount_cents), payments[-1]] * 3
    deliveries.at_once(shuffled(racing, seed=3))

    assert_each_event_processed_once(deliveries)
    found = refunded_in_full(bought, env)
    # Both orders happened: some payments granted (the refund came after), others found their
    # purchase granted already by the refund that overtook them.
    won = notes(env["DATABASE_URL"], [p["id"] for p in payments])
    assert won.get("processed granted", 0) > 0 and won.get("processed already", 0) > 0, won
    assert sum(won.values()) == len(bought)
    name = f"refund racing its payment, 3 copies each (payment first {won['processed granted']} times)"
    record(name, deliveries, found, check_ledger(env))


def test_refund_events_delivered_many_times_at_once_claw_back_exactly_once(stack):
    env, web = stack
    intents, checkouts = purchases(env, web.port, intents=10, checkouts=10)
    payer = Deliveries(web.port)
    payer.at_once([session_completed(b) if b.flow == "checkout" else intent_succeeded(b) for b in intents + checkouts])
    assert payer.replies == {"processed": 20}
    deliveries = Deliveries(web.port)

    burst = []
    for b in intents:  # partly refunded: one event, and a second reporting the same running total
        burst += [charge_refunded(b, refunded_cents=1000)] * COPIES + [charge_refunded(b, refunded_cents=1000)] * 2
    for b in checkouts:  # refunded in full
        burst += [charge_refunded(b, refunded_cents=b.amount_cents)] * COPIES
    deliveries.at_once(shuffled(burst, seed=4))
    # An older event reporting a smaller total, late: Stripe's totals only grow, nothing changes.
    deliveries.at_once([charge_refunded(b, refunded_cents=500) for b in intents + checkouts])

    assert_each_event_processed_once(deliveries)
    for purchase, state in states(env["DATABASE_URL"], intents).items():
        # 115 credits * 1000 / 1500 cents = 76.67: 76 taken back once, 39 left.
        assert state == PurchaseState("partially_refunded", 1000, 76, 0, 1, 1, 1, 76, 39), purchase
    refunded_in_full(checkouts, env)
    found = states(env["DATABASE_URL"], intents + checkouts)
    record("each refund event 5 times at once", deliveries, found, check_ledger(env))


def test_workers_sigkilled_while_payments_arrive_lose_no_event_once_stripe_delivers_again(stack):
    env, web = stack
    intents, checkouts = purchases(env, web.port, intents=20, checkouts=22)
    bought, (left_long_ago, left_just_now) = intents + checkouts[:-2], checkouts[-2:]
    paid = [session_completed(b) if b.flow == "checkout" else intent_succeeded(b) for b in bought]
    deliveries = Deliveries(web.port)
    killed = []

    sender = threading.Thread(target=deliveries.at_once, args=(paid,))
    sender.start()
    for after in (8, 24):  # deliveries answered: killed twice while the burst is on
        while deliveries.sent < after and sender.is_alive():
            time.sleep(0.005)
        killed.append(web.kill_workers())
    sender.join(timeout=120)
    unacknowledged = len(deliveries.unacknowledged())
    # Stored by a delivery that was killed before it processed them: only Stripe's next one can.
    stranded = events_by_status(env["DATABASE_URL"]).get("received", 0)

    # The same, left on purpose: an event stored a while ago by a delivery that never finished is
    # processed by the next delivery; one stored a moment ago is its storing delivery's to finish.
    long_ago, just_now = session_completed(left_long_ago), session_completed(left_just_now)
    stored_unprocessed(env["DATABASE_URL"], long_ago, seconds_ago=REDELIVERY_DELAY_SECONDS)
    stored_unprocessed(env["DATABASE_URL"], just_now, seconds_ago=0)
    deliveries.at_once([long_ago, just_now])
    assert deliveries.by_event[long_ago["id"]] == ["processed"]
    assert deliveries.by_event[just_now["id"]] == ["duplicate"]

    time.sleep(REDELIVERY_DELAY_SECONDS)
    deliveries.redeliver()
    deliveries.deliver(just_now)  # a copy Stripe sends later, once that delivery has died

    assert sum(killed) >= 6 and unacknowledged > 0, (killed, unacknowledged)
    assert not deliveries.unacknowledged() and deliveries.answers[500] == 0, deliveries.answers
    assert deliveries.by_event[just_now["id"]] == ["duplicate", "processed"]
    assert events_by_status(env["DATABASE_URL"]).get("received", 0) == 0
    found = states(env["DATABASE_URL"], intents + checkouts)
    for purchase, state in found.items():
        assert state == PurchaseState("paid", 0, 0, 0, 1, 1, 0, 0, 115), purchase
    name = (
        f"workers SIGKILLed ({sum(killed)}) while payments arrive, {unacknowledged} events unanswered "
        f"({stranded} of them stored unprocessed) and 2 left stored unprocessed, delivered again"
    )
    record(name, deliveries, found, check_ledger(env))
