"""How a recharge ends when Stripe's answer comes later than the charge: declined afterwards
(payment_intent.payment_failed), or paid (the purchase's fulfilment)."""

from __future__ import annotations

import pytest

from billing.services.purchases import StripeRefs, purchase_fulfil, purchase_payment_failed
from notifications.models import AutoRecharge, Event, Recharge
from notifications.services.recharge import recharges_declined_later
from tests.billing.stripe_support import pending_purchase

pytestmark = pytest.mark.django_db


def charging_recharge(account, pack) -> Recharge:  # type: ignore[no-untyped-def]
    AutoRecharge.objects.create(
        account=account,
        enabled=True,
        pack=pack,
        threshold_credits=10,
        monthly_cap_cents=3000,
        stripe_payment_method_id="pm_1",
        state=AutoRecharge.State.QUEUED,
        consecutive_failures=2,
    )
    purchase = pending_purchase(pack, account=account)
    return Recharge.objects.create(
        account=account, status=Recharge.Status.CHARGING, purchase=purchase, quantity=1, amount_cents=1500
    )


def test_a_payment_declined_after_the_charge_fails_the_recharge_and_counts(buyer, pack):
    _, account = buyer
    recharge = charging_recharge(account, pack)
    assert recharges_declined_later() == 0  # nothing declined yet: still charging
    purchase_payment_failed(purchase=recharge.purchase, reason="Your card was declined.")
    assert recharges_declined_later() == 1
    recharge.refresh_from_db()
    assert recharge.status == "failed" and recharge.error == "Your card was declined."
    settings_row = AutoRecharge.objects.get(account=account)
    assert (settings_row.state, settings_row.consecutive_failures, settings_row.enabled) == ("idle", 3, False)
    (event,) = Event.objects.filter(account=account, type="auto_recharge.failed")
    assert event.data["auto_recharge_disabled"] is True
    assert recharges_declined_later() == 0


def test_a_paid_recharge_succeeds_once_and_resets_the_failures(buyer, pack):
    _, account = buyer
    recharge = charging_recharge(account, pack)
    purchase = recharge.purchase
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")  # a duplicate event
    recharge.refresh_from_db()
    assert recharge.status == "succeeded"
    settings_row = AutoRecharge.objects.get(account=account)
    assert (settings_row.state, settings_row.consecutive_failures) == ("idle", 0)
    assert Event.objects.filter(account=account, type="auto_recharge.succeeded").count() == 1
    assert Event.objects.filter(account=account, type="purchase.paid").count() == 1
