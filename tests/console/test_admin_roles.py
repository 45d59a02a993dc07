"""The roles the migration creates: support grants (up to a limit), suspends and replays events;
finance refunds, claws back, voids and edits packs and prices. Refusals inside /admin/ are
Django's HTML pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.models import Account, UserToken
from accounts.services import user_token_create
from billing.models import BillingPolicy, CreditPack, Grant, Operation, PurchaseRefund
from console.models import AuditRecord
from console.roles import FINANCE, SUPPORT
from tests.billing.factories import give, make_account
from tests.billing.stripe_support import pending_purchase
from tests.billing.test_purchases import fulfil

from .conftest import confirm, logged_in, operator, review

pytestmark = pytest.mark.django_db


def codenames(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_the_migration_created_both_roles_with_their_permissions():
    support, finance = codenames(SUPPORT), codenames(FINANCE)
    assert {"console.grant_credits", "console.suspend_account", "console.replay_stripe_event"} <= support
    assert {"console.refund_purchase", "console.clawback_credits", "console.void_grant"} <= finance
    assert {"billing.change_creditpack", "billing.add_creditpack", "billing.change_operation"} <= finance
    assert {"billing.add_billingpolicy", "billing.change_billingpolicy"} <= finance
    for role in (support, finance):  # both see everything
        assert {"accounts.view_account", "billing.view_ledgerentry", "billing.view_purchase"} <= role
        assert {"console.view_auditrecord", "console.view_dailyrollup", "django_celery_beat.view_periodictask"} <= role
    assert not {"console.refund_purchase", "console.clawback_credits", "billing.change_creditpack"} & support
    assert not {"console.grant_credits", "console.grant_credits_unlimited", "console.suspend_account"} & finance
    assert not any(name.startswith(("billing.delete_", "billing.change_ledger")) for name in support | finance)


def test_a_support_user_is_refused_a_refund_with_an_html_page(support_client, pack):
    purchase = fulfil(pending_purchase(pack))
    url = reverse("admin:billing_purchase_refund", args=[purchase.public_id])

    page = support_client.get(url)
    forged = support_client.post(url, {"amount_cents": 100, "reason": "x", "confirmation": "whatever"})

    for answer in (page, forged):
        assert answer.status_code == 403
        assert answer["Content-Type"].startswith("text/html")
        assert b"Your role does not allow this action: Refund pur_" in answer.content
    assert not PurchaseRefund.objects.exists() and not AuditRecord.objects.exists()
    change_page = support_client.get(reverse("admin:billing_purchase_change", args=[purchase.public_id]))
    assert change_page.status_code == 200 and b">Refund<" not in change_page.content


def test_a_support_grant_over_the_limit_is_refused_with_a_clear_message(support_client, settings):
    settings.SUPPORT_GRANT_LIMIT_CREDITS = 100
    account = make_account()
    url = reverse("admin:accounts_account_grant", args=[account.public_id])

    page = confirm(support_client, url, {"credits": 101, "reason": "big goodwill"})

    assert page.status_code == 200
    message = page.context["form"].non_field_errors()[0]
    assert message.startswith("Your role may grant at most 100 credits at once")
    # Finance may not grant at all: only a superuser or a holder of grant_credits_unlimited can.
    assert "finance" not in message and "superuser" in message
    assert not Grant.objects.filter(account=account).exists() and not AuditRecord.objects.exists()
    assert confirm(support_client, url, {"credits": 100, "reason": "goodwill"}).status_code == 302
    assert Grant.objects.get(account=account).amount == 100


def test_superusers_grant_over_the_support_limit(root_client, settings):
    settings.SUPPORT_GRANT_LIMIT_CREDITS = 100
    account = make_account()
    done = confirm(
        root_client,
        reverse("admin:accounts_account_grant", args=[account.public_id]),
        {"credits": 5000, "reason": "enterprise deal"},
    )
    assert done.status_code == 302 and Grant.objects.get(account=account).amount == 5000


def test_support_suspends_but_may_not_claw_back_or_void(support_client):
    account = make_account()
    grant = give(account, 10)
    suspend = reverse("admin:accounts_account_suspend", args=[account.public_id])
    assert confirm(support_client, suspend, {"reason": "abuse"}).status_code == 302
    assert Account.objects.get(pk=account.pk).status == "suspended"
    for url in (
        reverse("admin:accounts_account_clawback", args=[account.public_id]),
        reverse("admin:billing_grant_void", args=[grant.pk]),
    ):
        assert support_client.post(url, {"grant": grant.pk, "credits": 1, "reason": "x"}).status_code == 403
    grant.refresh_from_db()
    assert grant.remaining == 10


def test_finance_claws_back_and_voids_but_may_not_grant_or_suspend(finance_client):
    account = make_account()
    grant = give(account, 10)
    clawback = reverse("admin:accounts_account_clawback", args=[account.public_id])
    assert confirm(finance_client, clawback, {"grant": grant.pk, "credits": 4, "reason": "fraud"}).status_code == 302
    assert (
        confirm(finance_client, reverse("admin:billing_grant_void", args=[grant.pk]), {"reason": "x"}).status_code
        == 302
    )
    grant.refresh_from_db()
    assert grant.remaining == 0
    for name in ("grant", "suspend"):
        url = reverse(f"admin:accounts_account_{name}", args=[account.public_id])
        assert review(finance_client, url, {"credits": 5, "reason": "x"}).status_code == 403
    assert Account.objects.get(pk=account.pk).status == "active"


def test_finance_edits_packs_and_prices_and_support_does_not(finance_client, support_client, pack):
    op = Operation.objects.get(code="edit")
    op_url = reverse("admin:billing_operation_change", args=[op.pk])
    pack_url = reverse("admin:billing_creditpack_change", args=[pack.pk])
    pack_form = {
        "slug": pack.slug,
        "name": pack.name,
        "credits": 120,
        "price_cents": 1500,
        "currency": "usd",
        "active": "on",
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
    }
    op_form = {"code": "edit", "credits": 3, "description": op.description, "active": "on"}

    assert support_client.post(op_url, op_form).status_code == 403
    assert support_client.post(pack_url, pack_form).status_code == 403
    assert Operation.objects.get(pk=op.pk).credits == op.credits

    assert finance_client.post(op_url, op_form).status_code == 302
    assert finance_client.post(pack_url, pack_form).status_code == 302
    assert Operation.objects.get(pk=op.pk).credits == 3
    assert CreditPack.objects.get(pk=pack.pk).credits == 120


POLICY_FORM = {"free_credits_first_period": 1000000, "free_credits_per_period": 1000000, "latest_anchor_day": 28}


@pytest.mark.parametrize("role", [SUPPORT, None])
def test_only_a_permission_holder_creates_the_missing_billing_policy(role):
    BillingPolicy.objects.all().delete()  # a fresh deployment, before its first signup or refill
    client = logged_in(operator("staff@example.com", role=role))
    assert client.get(reverse("admin:billing_billingpolicy_add")).status_code == 403
    assert client.post(reverse("admin:billing_billingpolicy_add"), POLICY_FORM).status_code == 403
    assert not BillingPolicy.objects.exists()


def test_finance_creates_the_missing_billing_policy_once(finance_client):
    BillingPolicy.objects.all().delete()
    assert finance_client.post(reverse("admin:billing_billingpolicy_add"), POLICY_FORM).status_code == 302
    assert BillingPolicy.objects.get().free_credits_per_period == 1000000
    assert finance_client.get(reverse("admin:billing_billingpolicy_add")).status_code == 403  # one row


@pytest.mark.parametrize("role", [SUPPORT, FINANCE, None])
def test_an_operator_without_the_permission_cannot_revoke_a_users_token(role):
    token, _ = user_token_create(user=make_account().user)
    client = logged_in(operator("staff@example.com", role=role))
    revoke = reverse("admin:accounts_usertoken_revoke", args=[token.pk])

    # The changelist's bulk action, as a crafted POST, and the audited page, as a forged one.
    client.post(reverse("admin:accounts_usertoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]})
    assert client.get(revoke).status_code == 403
    assert client.post(revoke, {"reason": "x", "confirmation": "whatever"}).status_code == 403

    assert UserToken.objects.get(pk=token.pk).revoked_at is None and not AuditRecord.objects.exists()


def test_a_staff_user_without_a_role_sees_nothing_and_gets_html_refusals():
    client = logged_in(operator("nobody@example.com"))
    account = make_account()
    answer = client.get(reverse("admin:accounts_account_change", args=[account.public_id]))
    assert answer.status_code == 403 and answer["Content-Type"].startswith("text/html")
    missing = client.get("/admin/no/such/page/")
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")


def test_the_api_still_answers_refusals_as_json(anon):
    answer = anon.get(f"/accounts/{make_account().public_id}/balance")
    assert answer.status_code in (401, 403) and answer.json()["error"]["code"]
