"""Celery tasks of notifications: each takes ids or nothing and calls one service."""

from __future__ import annotations

from celery import shared_task

from notifications.services.emails import email_send, emails_due
from notifications.services.expiring import credits_expiring_announce
from notifications.services.outbox import event_fan_out
from notifications.services.outbox import outbox_sweep as sweep
from notifications.services.recharge import recharge_charge as charge
from notifications.services.recharge import recharges_declined_later, recharges_unanswered_settle
from notifications.services.retention import events_purge
from notifications.services.webhooks import deliveries_due, delivery_attempt


@shared_task(name="notifications.dispatch_event")
def dispatch_event(event_id: int) -> None:
    event_fan_out(event_id=event_id)


@shared_task(name="notifications.outbox_sweep")
def outbox_sweep() -> int:
    """What the balance trigger left: events to fan out, recharges to charge; and recharges
    whose payment was declined after the charge was answered."""
    fanned, recharges = sweep()
    for recharge_id in recharges:
        recharge_charge.delay(recharge_id)
    recharges_declined_later()
    return fanned


@shared_task(name="notifications.deliver_webhook")
def deliver_webhook(delivery_id: int) -> None:
    """One attempt; a failure sets the delivery's next attempt, which webhook_retry_due queues."""
    delivery_attempt(delivery_id=delivery_id)


@shared_task(name="notifications.webhook_retry_due")
def webhook_retry_due() -> int:
    due = deliveries_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(name="notifications.send_email")
def send_email(email_id: int) -> None:
    """One attempt; a failure sets the email's next attempt, which email_retry_due queues. A task
    that never ran or could not record its outcome (the broker or the database down) leaves the
    email due, and email_retry_due queues it as well."""
    email_send(email_id=email_id)


@shared_task(name="notifications.email_retry_due")
def email_retry_due() -> int:
    due = emails_due()
    for email_id in due:
        send_email.delay(email_id)
    return len(due)


@shared_task(name="notifications.recharge_charge")
def recharge_charge(recharge_id: int) -> None:
    charge(recharge_id=recharge_id)


@shared_task(name="notifications.recharges_unanswered")
def recharges_unanswered() -> int:
    return recharges_unanswered_settle()


@shared_task(name="notifications.credits_expiring")
def credits_expiring() -> int:
    return credits_expiring_announce()


@shared_task(name="notifications.purge_events")
def purge_events() -> int:
    return events_purge()
