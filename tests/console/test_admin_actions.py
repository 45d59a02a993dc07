"""Each operator action: it moves what it says through the services, writes its ledger entries
and its audit record, and happens only with a reason and after its confirmation page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.ids import user_public_id
from accounts.models import Account, ServiceKey, UserToken
from accounts.services import hash_key, user_token_create
from billing.models import Grant, Hold, LedgerEntry, PurchaseRefund, StripeEvent
from billing.services.ledger import hold_create
from console.models import AuditRecord
from console.services import Operator, ReasonRequired, credits_grant
from notifications.models import Event
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import event, intent_object, pending_purchase
from tests.billing.test_purchases import answer_refund, fulfil
from tests.conftest import Api

from .conftest import confirm, review

pytestmark = pytest.mark.django_db


def grant_url(account: Account) -> str:
    return reverse("admin:accounts_account_grant", args=[account.public_id])


def test_a_grant_asks_for_confirmation_then_writes_its_entry_balance_and_audit_record(root_client):
    account = make_account()
    data = {"credits": 10, "reason": "goodwill for a failed render", "expires_at": "", "priority": ""}

    page = review(root_client, grant_url(account), data)

    assert page.context["stage"] == "confirm"
    assert b"Please confirm" in page.content and b"goodwill for a failed render" in page.content
    assert not Grant.objects.filter(account=account).exists()  # nothing before the confirmation

    done = root_client.post(grant_url(account), {**data, "confirmation": page.context["confirmation"]})

    assert done.status_code == 302
    assert done["Location"] == reverse("admin:accounts_account_change", args=[account.public_id])
    account.refresh_from_db()
    assert account.available_credits == 10
    (grant,) = Grant.objects.filter(account=account)
    assert (grant.source, grant.amount, grant.remaining, grant.expires_at) == ("adjustment", 10, 10, None)
    (entry,) = LedgerEntry.objects.filter(account=account)
    assert (entry.kind, entry.credits, entry.balance_after, entry.actor_type) == ("grant", 10, 10, "staff")
    (record,) = AuditRecord.objects.all()
    assert (record.action, record.actor, record.target, record.credits) == (
        "grant",
        "root@example.com",
        account.public_id,
        10,
    )
    assert record.staff_user.email == "root@example.com" and record.reason == "goodwill for a failed render"
    assert record.details["grant"] == grant.pk
    assert str(record.staff_user.pk) == entry.actor_id


def test_a_grant_with_expiry_and_priority_keeps_them(root_client):
    account = make_account()
    confirm(
        root_client,
        grant_url(account),
        {"credits": 5, "reason": "promo", "expires_at": "2099-01-31 00:00", "priority": "7"},
    )
    grant = Grant.objects.get(account=account)
    assert grant.expires_at.isoformat() == "2099-01-31T00:00:00+00:00" and grant.priority == 7


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_action_without_a_reason_is_refused_and_moves_nothing(root_client, reason):
    account = make_account()
    page = review(root_client, grant_url(account), {"credits": 10, "reason": reason})
    assert page.context["stage"] == "form"
    assert "reason" in page.context["form"].errors
    assert not Grant.objects.filter(account=account).exists() and not AuditRecord.objects.exists()


def test_the_service_itself_refuses_a_blank_reason():
    account = make_account()
    with pytest.raises(ReasonRequired):
        credits_grant(operator=Operator.staff(make_account().user), account=account, credits=5, reason=" \n")
    assert not Grant.objects.filter(account=account).exists()


@pytest.mark.parametrize(
    "confirmation",
    ["", "forged", "eyJ1c2VyIjoxfQ:1vOhxx:abc"],
)
def test_a_post_without_a_valid_confirmation_only_shows_the_confirmation_page(root_client, confirmation):
    account = make_account()
    page = root_client.post(grant_url(account), {"credits": 10, "reason": "r", "confirmation": confirmation})
    assert page.status_code == 200 and page.context["stage"] == "confirm"
    assert not Grant.objects.filter(account=account).exists()


def test_a_confirmation_of_other_values_carries_nothing_out(root_client):
    account = make_account()
    page = review(root_client, grant_url(account), {"credits": 10, "reason": "r"})
    tampered = root_client.post(
        grant_url(account), {"credits": 400, "reason": "r", "confirmation": page.context["confirmation"]}
    )
    assert tampered.context["stage"] == "confirm"
    assert not Grant.objects.filter(account=account).exists()


def test_a_confirmation_sent_twice_grants_once(root_client):
    account = make_account()
    data = {"credits": 10, "reason": "double click"}
    page = review(root_client, grant_url(account), data)
    first = root_client.post(grant_url(account), {**data, "confirmation": page.context["confirmation"]})
    second = root_client.post(grant_url(account), {**data, "confirmation": page.context["confirmation"]})
    assert first.status_code == 302
    assert second.status_code == 200 and b"already carried out" in second.content
    assert Grant.objects.filter(account=account).count() == 1 and AuditRecord.objects.count() == 1


def test_a_clawback_takes_unspent_credits_from_one_grant(root_client, assert_ledger_clean):
    account = make_account()
    grant = give(account, 30)
    url = reverse("admin:accounts_account_clawback", args=[account.public_id])
    done = confirm(root_client, url, {"grant": grant.pk, "credits": 12, "reason": "chargeback fraud"})
    assert done.status_code == 302
    grant.refresh_from_db()
    account.refresh_from_db()
    assert grant.remaining == 18 and account.available_credits == 18
    entry = LedgerEntry.objects.filter(account=account).latest("id")
    assert (entry.kind, entry.credits, entry.grant_id) == ("clawback", -12, grant.pk)
    record = AuditRecord.objects.get()
    assert (record.action, record.credits, record.target, record.details) == (
        "clawback",
        12,
        f"grant {grant.pk}",
        {"asked": 12, "taken": 12},
    )
    assert_ledger_clean()


def test_a_void_cancels_a_grants_remaining_credits(root_client, assert_ledger_clean):
    account = make_account()
    grant = give(account, 20)
    give(account, 5)
    done = confirm(root_client, reverse("admin:billing_grant_void", args=[grant.pk]), {"reason": "issued by mistake"})
    assert done.status_code == 302
    grant.refresh_from_db()
    account.refresh_from_db()
    assert grant.remaining == 0 and grant.amount == 20 and account.available_credits == 5
    assert LedgerEntry.objects.filter(account=account).latest("id").kind == "void"
    assert AuditRecord.objects.get().credits == 20
    assert_ledger_clean()


def test_a_clawback_of_a_purchase_lot_is_counted_on_the_purchase(root_client, stripe_keys, pack, run_check_ledger):
    purchase = fulfil(pending_purchase(pack))
    url = reverse("admin:accounts_account_clawback", args=[purchase.account.public_id])
    done = confirm(root_client, url, {"grant": purchase.grant_id, "credits": 10, "reason": "card testing"})
    assert done.status_code == 302
    purchase.refresh_from_db()
    assert (purchase.clawed_back_credits, purchase.unrecoverable_credits) == (10, 0)
    code, out = run_check_ledger()
    assert code == 0, out


def test_a_purchase_lot_is_not_voided_and_the_page_says_why(root_client, stripe_keys, pack):
    purchase = fulfil(pending_purchase(pack))
    page = confirm(root_client, reverse("admin:billing_grant_void", args=[purchase.grant_id]), {"reason": "fraud"})
    assert page.status_code == 200
    assert "claw them back" in " ".join(page.context["form"].non_field_errors())
    assert Grant.objects.get(pk=purchase.grant_id).remaining == 115
    assert not AuditRecord.objects.exists()


def test_suspend_then_reactivate_change_the_status_and_are_audited(root_client, api):
    account = make_account()
    give(account, 10)
    hold = hold_create(account=account, credits=3, expires_in=600, actor=STAFF)
    suspend = reverse("admin:accounts_account_suspend", args=[account.public_id])
    assert confirm(root_client, suspend, {"reason": "content policy"}).status_code == 302
    account.refresh_from_db()
    assert (account.status, account.status_reason) == ("suspended", "content policy")
    (notice,) = Event.objects.filter(account=account, type="account.suspended")
    assert notice.data == {"reason": "content policy"}
    page = root_client.get(reverse("admin:accounts_account_change", args=[account.public_id]))
    assert notice.public_id in page.content.decode()

    refused = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "account_suspended"
    captured = api.post(f"/holds/{hold.public_id}/capture", {"credits": 2})
    assert captured.status_code == 200 and captured.json()["status"] == "captured"

    reactivate = reverse("admin:accounts_account_reactivate", args=[account.public_id])
    assert confirm(root_client, reactivate, {"reason": "appeal accepted"}).status_code == 302
    account.refresh_from_db()
    assert account.status == "active"
    assert api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"}).status_code == 201
    assert list(AuditRecord.objects.order_by("id").values_list("action", "reason")) == [
        ("suspend", "content policy"),
        ("reactivate", "appeal accepted"),
    ]
    assert Hold.objects.get(pk=hold.pk).captured_credits == 2
    assert Event.objects.filter(account=account, type="account.suspended").count() == 1  # not on reactivation


def test_a_partial_then_a_full_refund_go_through_stripe_and_claw_back_their_share(
    root_client, recorder, pack, assert_ledger_clean
):
    recorder.on("post", "/v1/refunds", answer_refund)
    purchase = fulfil(pending_purchase(pack))
    url = reverse("admin:billing_purchase_refund", args=[purchase.public_id])

    done = confirm(root_client, url, {"amount_cents": 500, "reason": "one image was wrong"})

    assert done.status_code == 302
    purchase.refresh_from_db()
    assert (purchase.status, purchase.refunded_cents, purchase.clawed_back_credits) == ("partially_refunded", 500, 38)
    (sent,) = recorder.sent("post", "/v1/refunds")
    refund = PurchaseRefund.objects.get()
    assert sent.params["amount"] == "500" and sent.headers["Idempotency-Key"] == f"refund-{refund.public_id}"
    record = AuditRecord.objects.get()
    assert (record.action, record.amount_cents, record.target) == ("refund", 500, purchase.public_id)
    assert record.details == {"refund": refund.public_id}

    confirm(root_client, url, {"amount_cents": "", "reason": "customer left"})

    purchase.refresh_from_db()
    assert (purchase.status, purchase.refunded_cents, purchase.clawed_back_credits) == ("refunded", 1500, 115)
    assert [r.params["amount"] for r in recorder.sent("post", "/v1/refunds")] == ["500", "1000"]
    assert LedgerEntry.objects.filter(account=purchase.account, kind="clawback").count() == 2
    assert_ledger_clean()


def test_a_refund_over_what_is_left_is_refused_with_a_message(root_client, recorder, pack):
    recorder.on("post", "/v1/refunds", answer_refund)
    purchase = fulfil(pending_purchase(pack))
    url = reverse("admin:billing_purchase_refund", args=[purchase.public_id])
    page = confirm(root_client, url, {"amount_cents": 1501, "reason": "too much"})
    assert page.status_code == 200 and b"1500 cents are left to refund" in page.content
    assert not PurchaseRefund.objects.exists() and not AuditRecord.objects.exists()
    assert recorder.sent("post", "/v1/refunds") == []


def test_a_failed_stripe_event_is_processed_again(root_client, pack, stripe_keys):
    purchase = pending_purchase(pack)
    payload = event("payment_intent.succeeded", intent_object(purchase))
    stored = StripeEvent.objects.create(
        stripe_event_id=payload["id"], type=payload["type"], payload=payload, status="failed", error="db was down"
    )
    url = reverse("admin:billing_stripeevent_replay", args=[stored.pk])
    assert confirm(root_client, url, {"reason": "database is back"}).status_code == 302
    stored.refresh_from_db()
    purchase.refresh_from_db()
    assert stored.status == "processed" and purchase.status == "paid"
    assert AuditRecord.objects.get().target == stored.stripe_event_id


def test_a_service_key_is_revoked_and_another_created_and_shown_once(root_client, service_key, api):
    key = ServiceKey.objects.get(key_hash=hash_key(service_key))
    account = make_account()
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200  # the key is cached now
    done = confirm(root_client, reverse("admin:accounts_servicekey_revoke", args=[key.pk]), {"reason": "leaked"})
    assert done.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 401  # at once, cached or not

    created = confirm(
        root_client, reverse("admin:accounts_servicekey_create"), {"name": "generation-2", "reason": "rotation"}
    )
    raw = created.context["raw"]
    new = ServiceKey.objects.get(name="generation-2")
    assert raw.startswith("sk_") and new.key_hash == hash_key(raw) and raw.encode() in created.content
    assert list(AuditRecord.objects.order_by("id").values_list("action", flat=True)) == ["revoke_key", "create_key"]
    assert raw not in str(list(AuditRecord.objects.values_list("details", flat=True)))


def test_a_users_personal_token_is_revoked_with_a_reason_and_an_audit_record(root_client):
    account = make_account()
    token, raw = user_token_create(user=account.user)
    user = Api(raw)
    assert user.get("/me").status_code == 200
    page = root_client.get(reverse("admin:accounts_usertoken_change", args=[token.pk]))
    url = reverse("admin:accounts_usertoken_revoke", args=[token.pk])
    assert f'href="{url}"'.encode() in page.content

    assert review(root_client, url, {"reason": "leaked in a support ticket"}).status_code == 200
    assert UserToken.objects.get(pk=token.pk).revoked_at is None  # not before the confirmation
    done = confirm(root_client, url, {"reason": "leaked in a support ticket"})

    assert done.status_code == 302
    assert UserToken.objects.get(pk=token.pk).revoked_at is not None
    assert user.get("/me").status_code == 401
    record = AuditRecord.objects.get()
    assert (record.action, record.account, record.reason, record.actor) == (
        "revoke_token",
        account,
        "leaked in a support ticket",
        "root@example.com",
    )
    assert record.target == f"personal token {token.pk} {token.prefix}"
    assert record.details == {"user": user_public_id(account.user_id)}
    page = root_client.get(reverse("admin:accounts_usertoken_change", args=[token.pk]))
    assert f'href="{url}"'.encode() not in page.content  # nothing left to revoke
    # Revoking it again changes nothing and records nothing.
    assert confirm(root_client, url, {"reason": "again"}).status_code == 302
    assert AuditRecord.objects.count() == 1


def test_personal_tokens_are_neither_deleted_nor_edited_in_the_admin(root_client):
    token, _ = user_token_create(user=make_account().user)
    changelist = reverse("admin:accounts_usertoken_changelist")
    root_client.post(changelist, {"action": "delete_selected", "post": "yes", "_selected_action": [token.pk]})
    assert (
        root_client.post(reverse("admin:accounts_usertoken_delete", args=[token.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert UserToken.objects.filter(pk=token.pk, revoked_at__isnull=True).exists()


def test_a_refund_stripe_cannot_answer_stays_requested_audited_and_can_be_sent_again(root_client, recorder, pack):
    recorder.on("post", "/v1/refunds", (500, {"error": {"type": "api_error", "message": "try later"}}))
    purchase = fulfil(pending_purchase(pack))
    page = confirm(
        root_client,
        reverse("admin:billing_purchase_refund", args=[purchase.public_id]),
        {"amount_cents": 300, "reason": "partial goodwill"},
    )
    assert page.status_code == 200 and page.context["form"].non_field_errors()
    refund = PurchaseRefund.objects.get()
    assert refund.status == "requested" and AuditRecord.objects.get().amount_cents == 300  # the intent, committed
    purchase.refresh_from_db()
    assert purchase.refunded_cents == 0

    recorder.on("post", "/v1/refunds", answer_refund)
    send = reverse("admin:billing_purchaserefund_send", args=[refund.public_id])
    assert confirm(root_client, send, {"reason": "Stripe is back"}).status_code == 302
    refund.refresh_from_db()
    purchase.refresh_from_db()
    assert refund.status == "succeeded" and purchase.refunded_cents == 300
    assert {r.headers["Idempotency-Key"] for r in recorder.sent("post", "/v1/refunds")} == {
        f"refund-{refund.public_id}"
    }
    assert list(AuditRecord.objects.order_by("id").values_list("details", flat=True)) == [
        {"refund": refund.public_id},
        {"refund": refund.public_id, "sent_again": True},
    ]


def test_a_grant_expiring_in_the_past_is_refused(root_client):
    account = make_account()
    page = review(root_client, grant_url(account), {"credits": 5, "reason": "r", "expires_at": "2001-01-01 00:00"})
    assert page.context["stage"] == "form" and "expires_at" in page.context["form"].errors
    assert not Grant.objects.filter(account=account).exists()


def test_a_reason_on_several_lines_confirms_whichever_line_ends_come_back(root_client):
    account = make_account()
    page = review(root_client, grant_url(account), {"credits": 3, "reason": "first line\r\nsecond line"})
    done = root_client.post(
        grant_url(account),
        {"credits": 3, "reason": "first line\nsecond line", "confirmation": page.context["confirmation"]},
    )
    assert done.status_code == 302 and Grant.objects.filter(account=account).count() == 1
