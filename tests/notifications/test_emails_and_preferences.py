"""Emails to end users (Django's test outbox), their per-kind opt-outs through the API, and the
events that only some changes raise: purchase.refunded, account.suspended, credits.expiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from accounts.services import account_reactivate, account_suspend
from billing.models import CreditPack, Grant
from billing.services.ledger import account_settle, debit_create
from billing.services.purchases import StripeRefs, purchase_fulfil, purchase_refunds_sync
from notifications.events import event_raise
from notifications.models import EmailDelivery, Event
from notifications.services.emails import email_send
from notifications.services.expiring import credits_expiring_announce
from notifications.services.outbox import event_fan_out, outbox_sweep
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import pending_purchase

pytestmark = pytest.mark.django_db

NOW = datetime(2031, 7, 1, 9, 30, tzinfo=UTC)


def put(api, body):  # type: ignore[no-untyped-def]
    return api.client.put(
        "/api/v1/me/notifications", body, content_type="application/json", headers=api._headers(None, None)
    )


def deliver_emails() -> list[mail.EmailMessage]:
    """What the workers do: fan out what the outbox holds, then send each email."""
    outbox_sweep()
    for email in EmailDelivery.objects.filter(status="pending"):
        email_send(email_id=email.pk)
    return list(mail.outbox)


def cross_below(account) -> None:  # type: ignore[no-untyped-def]
    give(account, 10)
    debit_create(account=account, credits=3, actor=STAFF, reference="gen")


def test_balance_low_emails_the_user_in_plain_text_and_html(buyer):
    _, account = buyer
    cross_below(account)
    (message,) = deliver_emails()
    assert message.to == [account.user.email]
    assert message.subject == "Your credits are running low"
    assert "7 left, below your warning level of 10" in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html" and "<strong>7</strong> credits left" in html
    assert "http://" in message.body and "/billing" in message.body
    event = Event.objects.get(account=account, type="balance.low")
    assert message.extra_headers["X-Event-Id"] == event.public_id
    assert EmailDelivery.objects.get(event=event).status == "sent"
    assert deliver_emails() == [message]  # sent once


def test_a_kind_switched_off_is_not_sent_and_the_others_still_are(buyer, pack):
    api, account = buyer
    assert api.get("/me/notifications").json() == {
        "low_balance_threshold": None,
        "effective_low_balance_threshold": 10,
        "default_low_balance_threshold": 10,
        "emails": {
            "balance.low": True,
            "credits.expiring": True,
            "purchase.paid": True,
            "purchase.refunded": True,
            "auto_recharge.succeeded": True,
            "auto_recharge.failed": True,
            "account.suspended": True,
        },
    }
    answer = put(api, {"emails": {"balance.low": False}})
    assert answer.status_code == 200 and answer.json()["emails"]["balance.low"] is False
    assert answer.json()["emails"]["purchase.paid"] is True

    cross_below(account)
    purchase = pending_purchase(pack, account=account)
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")
    (message,) = deliver_emails()
    assert message.subject == "Thank you: your credits have arrived"
    assert f"purchase {purchase.public_id}: 115 credits" in message.body
    assert not EmailDelivery.objects.filter(event__type="balance.low").exists()
    # The event itself is still raised, for the webhooks.
    assert Event.objects.filter(account=account, type="balance.low").count() == 1

    assert put(api, {"emails": {"balance.low": True}}).json()["emails"]["balance.low"] is True


def test_the_threshold_is_set_and_reset_through_the_api(buyer):
    api, account = buyer
    body = put(api, {"low_balance_threshold": 40}).json()
    assert (body["low_balance_threshold"], body["effective_low_balance_threshold"]) == (40, 40)
    give(account, 45)
    debit_create(account=account, credits=6, actor=STAFF, reference="gen")
    assert Event.objects.get(account=account).data == {"available": 39, "held": 0, "threshold": 40}
    body = put(api, {"low_balance_threshold": None}).json()
    assert (body["low_balance_threshold"], body["effective_low_balance_threshold"]) == (None, 10)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"low_balance_threshold": -1}, "low_balance_threshold"),
        ({"low_balance_threshold": "10"}, "low_balance_threshold"),
        ({"low_balance_threshold": 1.5}, "low_balance_threshold"),
        ({"low_balance_threshold": 10**10}, "low_balance_threshold"),
        ({"low_balance_threshold": True}, "low_balance_threshold"),
        ({"emails": {"balance.nope": False}}, "emails"),
        ({"emails": {"balance.low": "no"}}, "emails"),
        ({"emails": ["balance.low"]}, "emails"),
        ({"threshold": 5}, "threshold"),
    ],
)
def test_bad_preferences_are_refused_with_the_field_named(buyer, body, field):
    api, _ = buyer
    answer = put(api, body)
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"], error


def test_a_refund_raises_purchase_refunded_once_and_emails_it(buyer, pack):
    _, account = buyer
    purchase = pending_purchase(pack, account=account)
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")
    purchase_refunds_sync(purchase=purchase, stripe_refunded_cents=500)
    purchase_refunds_sync(purchase=purchase, stripe_refunded_cents=500)  # a repeated report
    (refunded,) = Event.objects.filter(account=account, type="purchase.refunded")
    assert refunded.data["refunded_cents"] == 500 and refunded.data["status"] == "partially_refunded"
    subjects = [m.subject for m in deliver_emails()]
    assert sorted(subjects) == ["Thank you: your credits have arrived", "Your purchase was refunded"]


@pytest.mark.parametrize(
    ("currency", "price_cents", "refunded_cents", "money"),
    [("usd", 1500, 500, "$5"), ("usd", 1500, 1450, "$14.50"), ("jpy", 2000, 500, "500 JPY")],
)
def test_the_refund_email_states_the_money_in_its_currency(buyer, currency, price_cents, refunded_cents, money):
    _, account = buyer
    pack = CreditPack.objects.create(
        slug=f"pack-{currency}", name="Pack", credits=100, price_cents=price_cents, currency=currency
    )
    purchase = pending_purchase(pack, account=account)
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=price_cents, currency=currency)
    purchase_refunds_sync(purchase=purchase, stripe_refunded_cents=refunded_cents)

    (message,) = [m for m in deliver_emails() if m.subject == "Your purchase was refunded"]

    html, _ = message.alternatives[0]
    for body in (message.body, html):
        assert f"Your purchase {purchase.public_id} was refunded ({money} in all)." in body
        assert "cents" not in body


def test_emails_about_one_credit_say_credit_not_credits(buyer):
    _, account = buyer
    give(account, 10)
    debit_create(account=account, credits=9, actor=STAFF, reference="gen")  # 1 left: balance.low
    give(account, 1, source=Grant.Source.PURCHASE, expires_at=timezone.now() + timedelta(days=1))  # expiring
    one = CreditPack.objects.create(slug="one-credit", name="One", credits=1, price_cents=100, currency="usd")
    paid = pending_purchase(one, account=account)
    purchase_fulfil(purchase=paid, refs=StripeRefs(), paid_cents=100, currency="usd")
    purchase_refunds_sync(purchase=paid, stripe_refunded_cents=100)  # takes back its 1 credit
    recharged = {"purchase": paid.public_id, "credits": 1, "quantity": 1, "recharge": "rch_x"}
    event_raise(type="auto_recharge.succeeded", account_id=account.pk, data=recharged)

    bodies = {m.subject: (m.body, m.alternatives[0][0]) for m in deliver_emails()}

    # The words each email's plain text and HTML say (the plain-text balance.low says "1 left").
    expected = {
        "Your credits are running low": ("1 left", "<strong>1</strong> credit left"),
        "Some of your credits expire soon": ("1 of your credits expires on", "1</strong> of your credits expires on"),
        "Thank you: your credits have arrived": ("1 credit is now in", "<strong>1</strong> credit is now in"),
        "Your purchase was refunded": ("1 unused credit it paid for was removed",) * 2,
        "We topped up your credits": ("bought 1 credit for you", "<strong>1</strong> credit for you"),
    }
    for subject, (in_text, in_html) in expected.items():
        text, html = bodies[subject]
        assert in_text in text, text
        assert in_html in html, html
        assert "1 credits" not in text and "1</strong> credits" not in html


def test_suspending_an_account_raises_account_suspended_once(buyer):
    _, account = buyer
    account_suspend(account_id=account.pk, reason="content policy")
    account_suspend(account_id=account.pk, reason="again")  # already suspended: nothing
    account_reactivate(account_id=account.pk, reason="appeal")
    (event,) = Event.objects.filter(account=account, type="account.suspended")
    assert event.data == {"reason": "content policy"}
    (message,) = deliver_emails()
    assert message.subject == "Your account has been suspended" and "content policy" in message.body


def test_credits_expiring_is_raised_once_per_lot_within_the_window(buyer):
    _, account = buyer
    # Granted already within the window: announced in its grant's transaction.
    give(account, 20, source=Grant.Source.PURCHASE, expires_at=NOW + timedelta(days=2), now=NOW)
    assert Event.objects.filter(type="credits.expiring").count() == 1
    give(account, 30, source=Grant.Source.PURCHASE, expires_at=NOW + timedelta(days=5), now=NOW)  # later
    # Free monthly credits expire every period by design: left out.
    signed_up = NOW - timedelta(days=29)
    free = account_settle(account=make_account(now=signed_up, free=True), actor=STAFF, now=signed_up)
    (free_lot,) = Grant.objects.filter(account=free, source=Grant.Source.FREE_MONTHLY)
    assert NOW < free_lot.expires_at <= NOW + timedelta(days=3)
    with time_machine.travel(NOW, tick=False):
        assert credits_expiring_announce(now=NOW) == 0  # once per lot: the 2-day lot's is made
    (event,) = Event.objects.filter(type="credits.expiring")
    assert event.data["credits"] == 20 and event.data["source"] == "purchase"
    assert event.data["expires_at"] == "2031-07-03T09:30:00Z"
    assert event.data["grant"].startswith("grt_")
    later = NOW + timedelta(days=3)
    assert credits_expiring_announce(now=later) == 1  # the second lot's turn
    assert Event.objects.filter(type="credits.expiring").count() == 2
    assert not Event.objects.filter(type="credits.expiring", account=free).exists()
    messages = deliver_emails()
    assert {m.subject for m in messages} == {"Some of your credits expire soon"} and len(messages) == 2
    assert "20 of your credits expire on 2031-07-03T09:30:00Z" in messages[0].body


def test_a_lot_granted_to_lapse_before_the_hourly_run_is_announced_as_it_is_granted(buyer):
    _, account = buyer
    give(account, 5, source=Grant.Source.PROMO, expires_at=NOW + timedelta(minutes=40), now=NOW)
    (event,) = Event.objects.filter(type="credits.expiring", account=account)
    assert event.data["credits"] == 5 and event.data["source"] == "promo"
    assert credits_expiring_announce(now=NOW + timedelta(minutes=20)) == 0  # the hourly run: done already


def test_a_fan_out_happens_once_however_many_workers_try(buyer):
    _, account = buyer
    cross_below(account)
    event = Event.objects.get(account=account)
    assert event_fan_out(event_id=event.pk) is not None
    assert event_fan_out(event_id=event.pk) is None
    assert EmailDelivery.objects.filter(event=event).count() == 1


def test_one_event_that_fails_to_fan_out_does_not_hold_up_the_others(monkeypatch, caplog):
    broken, fine = make_account(), make_account()
    cross_below(broken)
    cross_below(fine)
    from notifications.services import outbox

    def refuse_for_broken(*, account, kind):  # type: ignore[no-untyped-def]
        if account.pk == broken.pk:
            raise RuntimeError("template missing")
        return True

    monkeypatch.setattr(outbox, "email_wanted", refuse_for_broken)
    assert outbox_sweep() == (1, [])
    assert Event.objects.get(account=broken).dispatched_at is None  # left for the next sweep
    assert Event.objects.get(account=fine).dispatched_at is not None
    assert "fanning out event" in caplog.text and "template missing" in caplog.text
