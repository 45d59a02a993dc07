"""Raising events: what other apps call, inside the transaction of the change that causes the
event. The event row (the outbox) commits or rolls back with that change; once committed, a
worker fans it out to webhook endpoints and the user's email (services/outbox.py).

Balance crossings are raised by the database itself (billing/sql/billing_balance_crossed.sql).
This module imports no other app's services, so billing may call it from its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Account
from notifications.models import AutoRecharge, Event, EventType, Recharge


def event_raise(*, type: str, account_id: int, data: dict[str, Any], now: datetime | None = None) -> Event:
    """Write the event in the current transaction; queue its fan-out for after the commit."""
    event = Event.objects.create(type=type, account_id=account_id, data=data, created_at=now or timezone.now())
    # robust: a broker that is down must not fail the caller's committed work; the outbox sweep
    # dispatches whatever was not queued.
    transaction.on_commit(lambda: _queue_dispatch(event.pk), robust=True)
    return event


def _queue_dispatch(event_id: int) -> None:
    from notifications.tasks import dispatch_event  # the tasks reach every service: imported late

    dispatch_event.delay(event_id)


def _money(purchase: Any) -> dict[str, Any]:
    return {
        "purchase": purchase.public_id,
        "credits": purchase.credits,
        "amount_cents": purchase.amount_cents,
        "currency": purchase.currency,
        "quantity": purchase.quantity,
    }


def purchase_paid(*, purchase: Any, now: datetime | None = None) -> None:
    """purchase.paid, in the fulfilment's transaction; when the purchase is an auto-recharge's,
    that recharge succeeded too (auto_recharge.succeeded) and its account may queue the next."""
    now = now or timezone.now()
    event_raise(type=EventType.PURCHASE_PAID, account_id=purchase.account_id, data=_money(purchase), now=now)
    recharge = Recharge.objects.filter(purchase_id=purchase.pk, status=Recharge.Status.CHARGING).first()
    if recharge is None:
        return
    claimed = Recharge.objects.filter(pk=recharge.pk, status=Recharge.Status.CHARGING).update(
        status=Recharge.Status.SUCCEEDED, completed_at=now, error=""
    )
    if claimed:
        AutoRecharge.objects.filter(account_id=purchase.account_id).update(
            state=AutoRecharge.State.IDLE, consecutive_failures=0
        )
        event_raise(
            type=EventType.AUTO_RECHARGE_SUCCEEDED,
            account_id=purchase.account_id,
            data={**_money(purchase), "recharge": recharge.public_id},
            now=now,
        )


def purchase_refunded(*, purchase: Any, refunded_cents_before: int, now: datetime | None = None) -> None:
    """purchase.refunded when a refund added money back (a repeated or late report adds none)."""
    if purchase.refunded_cents <= refunded_cents_before:
        return
    data = {
        **_money(purchase),
        "refunded_cents": purchase.refunded_cents,
        "status": purchase.status,
        "clawed_back_credits": purchase.clawed_back_credits,
    }
    event_raise(type=EventType.PURCHASE_REFUNDED, account_id=purchase.account_id, data=data, now=now)


def account_suspended(*, account: Account, reason: str, now: datetime | None = None) -> None:
    event_raise(type=EventType.ACCOUNT_SUSPENDED, account_id=account.pk, data={"reason": reason}, now=now)
