"""Purchase services, operator refunds, reconciliation at the HTTP boundary, check_ledger's
purchase invariants, the admin, and the Stripe settings."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import User
from billing.errors import PaymentProviderError, RefundRefused
from billing.models import Grant, LedgerEntry, Purchase, PurchaseRefund, StripeEvent
from billing.schedules import SCHEDULES
from billing.services.ledger import debit_create
from billing.services.purchases import (
    StripeRefs,
    credits_expiry,
    purchase_fulfil,
    purchase_refund_execute,
    purchase_refund_request,
)
from billing.services.reconciliation import stripe_reconcile
from billing.tasks import reconcile_stripe
from tests.billing.factories import STAFF
from tests.billing.stripe_support import Recorded, intent_object, new_id, pending_purchase, stripe_list
from tests.console.conftest import confirm

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def fulfil(purchase: Purchase) -> Purchase:
    purchase_fulfil(
        purchase=purchase,
        refs=StripeRefs(payment_intent_id=purchase.stripe_payment_intent_id),
        paid_cents=purchase.amount_cents,
        currency="usd",
    )
    purchase.refresh_from_db()
    return purchase


@pytest.mark.parametrize(
    "paid_at, expires_at",
    [
        (datetime(2026, 3, 15, 10, 5, tzinfo=UTC), datetime(2027, 3, 15, 10, 5, tzinfo=UTC)),
        (datetime(2028, 2, 29, 23, 59, tzinfo=UTC), datetime(2029, 2, 28, 23, 59, tzinfo=UTC)),
        (datetime(2026, 12, 31, 0, 0, tzinfo=UTC), datetime(2027, 12, 31, 0, 0, tzinfo=UTC)),
    ],
)
def test_purchased_credits_expire_twelve_calendar_months_after_payment(paid_at, expires_at):
    assert credits_expiry(paid_at) == expires_at


def test_fulfilling_twice_grants_once(pack, assert_ledger_clean):
    purchase = pending_purchase(pack)
    assert purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="USD") is True
    assert purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd") is False
    assert Grant.objects.filter(account=purchase.account).count() == 1
    assert_ledger_clean()


# --- Operator refunds ----------------------------------------------------------------------------


def answer_refund(request: Recorded) -> tuple[int, dict]:
    return 200, {
        "id": new_id("re_"),
        "object": "refund",
        "status": "succeeded",
        "amount": int(request.params["amount"]),
    }


def test_an_operator_refund_is_recorded_before_stripe_is_called_with_a_key_derived_from_it(
    recorder, pack, assert_ledger_clean
):
    purchase = fulfil(pending_purchase(pack))
    seen_before_call: list[str] = []

    def answer(request: Recorded) -> tuple[int, dict]:
        seen_before_call.extend(PurchaseRefund.objects.values_list("status", flat=True))
        return answer_refund(request)

    recorder.on("post", "/v1/refunds", answer)
    refund = purchase_refund_request(purchase=purchase, amount_cents=500, requested_by="ops@example.com")
    refund = purchase_refund_execute(refund=refund, actor=STAFF)

    assert seen_before_call == ["requested"]  # the intent was committed first
    (sent,) = recorder.sent("post", "/v1/refunds")
    assert sent.headers["Idempotency-Key"] == f"refund-{refund.public_id}"
    assert sent.params == {
        "amount": "500",
        "payment_intent": purchase.stripe_payment_intent_id,
        "metadata[purchase]": purchase.public_id,
        "metadata[refund]": refund.public_id,
    }
    purchase.refresh_from_db()
    assert refund.status == "succeeded" and refund.stripe_refund_id.startswith("re_")
    # 115 * 500 / 1500 = 38.3
    assert (purchase.status, purchase.refunded_cents, purchase.clawed_back_credits) == ("partially_refunded", 500, 38)
    assert_ledger_clean()


def test_a_refund_whose_answer_was_lost_stays_requested_and_is_sent_again_with_the_same_key(recorder, pack):
    purchase = fulfil(pending_purchase(pack))
    recorder.on("post", "/v1/refunds", (500, {"error": {"type": "api_error", "message": "try later"}}))
    refund = purchase_refund_request(purchase=purchase)
    recorder.MAX_DELAY = 0  # the library's retry back-off, not business time
    recorder.INITIAL_DELAY = 0
    with pytest.raises(PaymentProviderError):
        purchase_refund_execute(refund=refund, actor=STAFF)
    refund.refresh_from_db()
    assert refund.status == "requested" and "try later" in refund.error

    recorder.on("post", "/v1/refunds", answer_refund)
    purchase_refund_execute(refund=refund, actor=STAFF)
    refund.refresh_from_db()
    assert refund.status == "succeeded"
    assert {r.headers["Idempotency-Key"] for r in recorder.sent("post", "/v1/refunds")} == {
        f"refund-{refund.public_id}"
    }
    purchase.refresh_from_db()
    assert (purchase.status, purchase.clawed_back_credits) == ("refunded", 115)


def test_a_refund_stripe_refuses_is_recorded_as_failed_and_moves_no_credits(recorder, pack):
    purchase = fulfil(pending_purchase(pack))
    recorder.on("post", "/v1/refunds", (400, {"error": {"type": "invalid_request_error", "message": "disputed"}}))
    refund = purchase_refund_request(purchase=purchase)
    with pytest.raises(PaymentProviderError):
        purchase_refund_execute(refund=refund, actor=STAFF)
    refund.refresh_from_db()
    purchase.refresh_from_db()
    assert refund.status == "failed"
    assert (purchase.status, purchase.clawed_back_credits) == ("paid", 0)
    # The failed one no longer counts against what is left: a new refund of it all is possible.
    assert purchase_refund_request(purchase=purchase).amount_cents == 1500


@pytest.mark.parametrize("amount", [0, -1, 1501])
def test_a_refund_beyond_what_is_left_is_refused(stripe_keys, pack, amount):
    purchase = fulfil(pending_purchase(pack))
    with pytest.raises(RefundRefused):
        purchase_refund_request(purchase=purchase, amount_cents=amount)
    purchase_refund_request(purchase=purchase, amount_cents=1000)
    with pytest.raises(RefundRefused, match="500 cents are left"):
        purchase_refund_request(purchase=purchase, amount_cents=501)


def test_an_unpaid_purchase_cannot_be_refunded(stripe_keys, pack):
    with pytest.raises(RefundRefused, match="only paid purchases"):
        purchase_refund_request(purchase=pending_purchase(pack))


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser(email="ops@example.com", password="x" * 12))
    return client


def test_the_admin_refund_reports_its_outcome_and_refuses_an_unpaid_purchase(recorder, operator, pack):
    # The operator console's refund page (console/admin/money.py): a reason, then the confirmation.
    recorder.on("post", "/v1/refunds", answer_refund)
    paid = fulfil(pending_purchase(pack))
    unpaid = pending_purchase(pack)
    done = confirm(operator, reverse("admin:billing_purchase_refund", args=[paid.public_id]), {"reason": "asked"})
    page = operator.get(done["Location"]).content.decode()
    assert "Refund rfnd_" in page and "succeeded for 1500 cents" in page
    refused = confirm(operator, reverse("admin:billing_purchase_refund", args=[unpaid.public_id]), {"reason": "x"})
    assert f"{unpaid.public_id} is pending: only paid purchases refund" in refused.content.decode()
    assert len(recorder.sent("post", "/v1/refunds")) == 1


def test_the_admin_sends_a_requested_refund_again(recorder, operator, pack):
    recorder.on("post", "/v1/refunds", answer_refund)
    refund = purchase_refund_request(purchase=fulfil(pending_purchase(pack)))
    confirm(operator, reverse("admin:billing_purchaserefund_send", args=[refund.public_id]), {"reason": "timed out"})
    refund.refresh_from_db()
    assert refund.status == "succeeded"


def test_the_admin_processes_a_failed_event_again(stripe_keys, operator, pack):
    purchase = pending_purchase(pack)
    payload = {"id": "evt_retry", "type": "payment_intent.succeeded", "data": {"object": intent_object(purchase)}}
    stored = StripeEvent.objects.create(
        stripe_event_id="evt_retry", type=payload["type"], payload=payload, status="failed"
    )
    confirm(operator, reverse("admin:billing_stripeevent_replay", args=[stored.pk]), {"reason": "database is back"})
    stored.refresh_from_db()
    purchase.refresh_from_db()
    assert (stored.status, purchase.status) == ("processed", "paid")


@pytest.mark.parametrize(
    "name",
    [
        "billing_creditpack",
        "billing_purchase",
        "billing_purchaserefund",
        "billing_stripecustomer",
        "billing_stripeevent",
    ],
)
def test_the_new_admin_pages_render(operator, stripe_keys, pack, name):
    purchase = fulfil(pending_purchase(pack))
    response = operator.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200
    if name == "billing_purchase":
        assert response.status_code == 200
        detail = operator.get(reverse("admin:billing_purchase_change", args=[purchase.pk]))
        assert detail.status_code == 200 and b"unrecoverable" in detail.content.lower()


# --- Reconciliation at the HTTP boundary ---------------------------------------------------------


def test_reconciliation_fulfils_paid_sessions_and_intents_whose_webhooks_never_came(recorder, pack):
    by_session = pending_purchase(pack, flow="checkout")
    by_intent = pending_purchase(pack)
    already = fulfil(pending_purchase(pack))
    now = int(datetime.now(UTC).timestamp())
    session = {
        "id": by_session.stripe_checkout_session_id,
        "object": "checkout.session",
        "payment_status": "paid",
        "status": "complete",
        "amount_total": 1500,
        "currency": "usd",
        "payment_intent": "pi_from_session",
        "metadata": {"purchase": by_session.public_id},
        "created": now - 60,
    }
    old = {**session, "id": "cs_old", "metadata": {}, "created": now - 10 * 86400}
    recorder.on("get", "/v1/checkout/sessions", (200, stripe_list("/v1/checkout/sessions", [session, old])))
    intents = [
        intent_object(by_intent, created=now - 30),
        intent_object(already, created=now - 40),
        {**intent_object(pending_purchase(pack), created=now - 50), "status": "requires_payment_method"},
    ]
    recorder.on("get", "/v1/payment_intents", (200, stripe_list("/v1/payment_intents", intents)))

    report = stripe_reconcile()

    assert sorted(report.fulfilled) == sorted([by_session.public_id, by_intent.public_id])
    assert report.errors == []
    assert (report.checkout_sessions_seen, report.payment_intents_seen) == (1, 2)  # the old one ends the walk
    (listing,) = recorder.sent("get", "/v1/checkout/sessions")
    assert listing.params == {"status": "complete", "limit": "100"}
    by_session.refresh_from_db()
    assert by_session.status == "paid" and by_session.stripe_payment_intent_id == "pi_from_session"
    assert Grant.objects.filter(source="purchase").count() == 3
    assert stripe_reconcile().fulfilled == []


def test_reconcile_command_and_task_report_what_they_fixed(recorder, pack):
    purchase = pending_purchase(pack)
    recorder.on("get", "/v1/checkout/sessions", (200, stripe_list("/v1/checkout/sessions", [])))
    recorder.on("get", "/v1/payment_intents", (200, stripe_list("/v1/payment_intents", [intent_object(purchase)])))
    out = StringIO()
    call_command("reconcile_stripe", stdout=out)
    assert f"fulfilled 1 purchase(s) whose webhook never arrived: {purchase.public_id}" in out.getvalue()
    assert reconcile_stripe() == {"fulfilled": [], "errors": []}


@pytest.mark.parametrize("hours", ["99999999999", "30000000", "721", "0", "-5"])
def test_reconcile_command_refuses_a_window_out_of_bounds_and_asks_stripe_nothing(recorder, hours):
    with pytest.raises(CommandError, match="--hours must be from 1 to 720"):
        call_command("reconcile_stripe", "--hours", hours, stdout=StringIO())
    assert recorder.requests == []


def test_reconcile_command_looks_back_as_far_as_the_largest_window(recorder):
    for path in ("/v1/checkout/sessions", "/v1/payment_intents"):
        recorder.on("get", path, (200, stripe_list(path, [])))
    out = StringIO()
    call_command("reconcile_stripe", "--hours", "720", stdout=out)
    assert "fulfilled 0 purchase(s)" in out.getvalue()


def test_reconciliation_without_stripe_configured_is_skipped_quietly(settings):
    settings.STRIPE_SECRET_KEY = ""
    report = stripe_reconcile()
    assert report.errors == [] and report.lines() == [
        "skipped: payments are not configured (STRIPE_SECRET_KEY is not set)"
    ]
    out = StringIO()
    call_command("reconcile_stripe", stdout=out)  # exit 0: nothing is wrong, there is nothing to do
    assert "skipped" in out.getvalue()


def test_reconciliation_is_a_declared_periodic_schedule():
    (schedule,) = [s for s in SCHEDULES if s.task == "billing.reconcile_stripe"]
    assert schedule.every_seconds == 900


# --- check_ledger's purchase invariants ------------------------------------------------------------


def test_check_ledger_reports_a_paid_purchase_whose_clawbacks_do_not_match(stripe_keys, pack, run_check_ledger):
    purchase = fulfil(pending_purchase(pack))
    debit_create(account=purchase.account, credits=5, actor=STAFF, reference="x")
    assert run_check_ledger()[0] == 0
    Purchase.objects.filter(pk=purchase.pk).update(clawed_back_credits=3)  # no clawback entry says so
    code, report = run_check_ledger()
    assert code == 1 and f"purchase: {purchase.public_id}" in report


def test_check_ledger_reports_a_paid_purchase_whose_grant_is_not_its_credits(stripe_keys, pack, run_check_ledger):
    purchase = fulfil(pending_purchase(pack))
    other = fulfil(pending_purchase(pack, account=purchase.account))
    # Swap grants between the two: amounts match, so make the pack sizes differ.
    Purchase.objects.filter(pk=other.pk).update(grant=None, status="pending", paid_at=None, expires_at=None)
    Purchase.objects.filter(pk=purchase.pk).update(credits=114)
    code, report = run_check_ledger()
    assert code == 1 and f"purchase: {purchase.public_id}" in report
    assert LedgerEntry.objects.filter(kind="grant").count() == 2


# --- Settings ----------------------------------------------------------------------------------------


def load_settings(monkeypatch, **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "config" / "settings" / "base.py"))


def test_the_app_starts_without_stripe_keys(monkeypatch):
    loaded = load_settings(monkeypatch, STRIPE_SECRET_KEY="", STRIPE_WEBHOOK_SECRET="")
    assert loaded["STRIPE_SECRET_KEY"] == "" and loaded["STRIPE_WEBHOOK_SECRET"] == ""


def test_checkout_returns_the_buyer_to_the_site_url_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("CHECKOUT_SUCCESS_URL", raising=False)
    monkeypatch.delenv("CHECKOUT_CANCEL_URL", raising=False)

    loaded = load_settings(monkeypatch, SITE_URL="https://credits.example/")

    assert loaded["CHECKOUT_SUCCESS_URL"] == "https://credits.example/billing/success?purchase={PURCHASE_ID}"
    assert loaded["CHECKOUT_CANCEL_URL"] == "https://credits.example/billing/cancel?purchase={PURCHASE_ID}"
    told = load_settings(monkeypatch, CHECKOUT_SUCCESS_URL="https://pay.example/done?p={PURCHASE_ID}")
    assert told["CHECKOUT_SUCCESS_URL"] == "https://pay.example/done?p={PURCHASE_ID}"


@pytest.mark.parametrize(
    "name, value",
    [
        ("STRIPE_SECRET_KEY", "pk_test_publishable_not_secret"),
        ("STRIPE_SECRET_KEY", "sk_"),
        ("STRIPE_SECRET_KEY", "sk_test_with space"),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_0123456789abcdef"),
        ("STRIPE_API_BASE", "localhost:8420"),
        ("CHECKOUT_SUCCESS_URL", "/billing/success"),
    ],
)
def test_a_malformed_stripe_setting_stops_start_up_naming_the_variable(monkeypatch, name, value):
    with pytest.raises(ImproperlyConfigured, match=name):
        load_settings(monkeypatch, **{name: value})


def test_manage_py_refuses_to_start_with_a_malformed_key():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "STRIPE_SECRET_KEY": "pk_live_oops"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "STRIPE_SECRET_KEY must start with sk_ or rk_" in done.stderr
    assert "pk_live_oops" not in done.stderr  # a secret-looking value is not echoed
