"""Accounts, service keys and personal tokens in the admin: find an account, see everything about
it, and act on it (grant, claw back, suspend, reactivate, revoke a key or a user's token) through
the console's services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from accounts.models import Account, ServiceKey, UserToken
from billing.admin import CappedCountPaginator, PublicIdLookup
from billing.models import Grant
from billing.services.ledger import Actor, account_settle
from console import selectors
from console.forms import ClawbackForm, GrantForm, ReasonForm, ServiceKeyCreateForm
from console.services import (
    account_status_change,
    credits_clawback,
    credits_grant,
    service_key_create_audited,
    service_key_revoke_audited,
    user_token_revoke_audited,
)

from .confirm import ActionPage, MadeByServicesAdmin, action_view, operator_of


class HasPaidCreditsFilter(admin.SimpleListFilter):
    title = "has paid credits"
    parameter_name = "paid"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Account]) -> QuerySet[Account]:
        if self.value() == "yes":
            return selectors.accounts_with_paid_credits(queryset)
        return queryset


@admin.register(Account)
class AccountAdmin(PublicIdLookup, MadeByServicesAdmin):
    list_display = [
        "public_id",
        "user",
        "status",
        "available_credits",
        "held_credits",
        "free_credits",
        "paid_credits",
        "created_at",
    ]
    list_filter = ["status", HasPaidCreditsFilter]
    search_fields = ["public_id"]  # shows the box; get_search_results decides what a term means
    search_help_text = "An account id (acct_...), a purchase id (pur_...), a Stripe customer id (cus_...) or an email."
    list_select_related = ["user"]
    ordering = ["-id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    fields = [
        "public_id",
        "user",
        "status",
        "status_reason",
        "available_credits",
        "held_credits",
        "created_at",
        "period_anchor_day",
        "first_period_start",
        "free_period_start",
    ]
    change_form_template = "admin/console/account_change_form.html"

    # Balances move only through the ledger, and the status only through the actions below.

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return selectors.accounts_with_credit_split(super().get_queryset(request))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        if not search_term.strip():
            return queryset, False
        return selectors.accounts_matching(queryset, search_term), False

    @admin.display(description="free")
    def free_credits(self, account: Any) -> int:
        return account.free_credits

    @admin.display(description="paid")
    def paid_credits(self, account: Any) -> int:
        return account.paid_credits

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        account = self.get_object(request, unquote(object_id))
        extra: dict[str, Any] = dict(extra_context or {})
        if isinstance(account, Account):
            # Settled first, as every read of a balance is: a lot or hold that lapsed is counted
            # as the spend functions count it (the page's own read comes after).
            account_settle(account=account, actor=Actor.system("account_page"))
            extra["panels"] = selectors.account_panels(account=account)
            extra["ledger_url"] = reverse("admin:billing_ledgerentry_changelist") + f"?account__id__exact={account.pk}"
            extra["object_id_for_actions"] = account.public_id
        return super().change_view(request, str(account.pk) if account else object_id, form_url, extra)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<str:object_id>/grant/", wrap(self.grant_view), name="accounts_account_grant"),
            path("<str:object_id>/clawback/", wrap(self.clawback_view), name="accounts_account_clawback"),
            path(
                "<str:object_id>/suspend/", wrap(self.suspend_view), {"suspend": True}, name="accounts_account_suspend"
            ),
            path(
                "<str:object_id>/reactivate/",
                wrap(self.suspend_view),
                {"suspend": False},
                name="accounts_account_reactivate",
            ),
            *super().get_urls(),
        ]

    def _account(self, request: HttpRequest, object_id: str) -> Account:
        account = self.get_object(request, unquote(object_id))
        if account is None:
            raise Http404("No such account.")
        return account  # type: ignore[return-value]

    def _page_url(self, account: Account) -> str:
        return reverse("admin:accounts_account_change", args=[account.public_id])

    def grant_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self._account(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            grant = credits_grant(
                operator=operator_of(request),
                account=account,
                credits=data["credits"],
                expires_at=data["expires_at"],
                priority=data["priority"],
                reason=data["reason"],
                confirmation=confirmation,
            )
            return f"Granted {grant.amount} credits to {account.public_id} (grant {grant.pk})."

        page = ActionPage(
            title=f"Grant credits to {account.public_id}",
            permission="console.grant_credits",
            target=account,
            done_url=self._page_url(account),
            perform=perform,
            summary=lambda d: [
                ("Account", f"{account.public_id} ({account.user.email})"),
                ("Credits", d["credits"]),
                ("Expires", d["expires_at"] or "never"),
                ("Priority", d["priority"] if d["priority"] is not None else "the default"),
                ("Reason", d["reason"]),
            ],
        )
        return action_view(self, request, page, GrantForm(request.POST or None))

    def clawback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self._account(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            grant: Grant = data["grant"]
            taken = credits_clawback(
                operator=operator_of(request),
                grant=grant,
                credits=data["credits"],
                reason=data["reason"],
                confirmation=confirmation,
            )
            return f"Clawed back {taken} of {data['credits']} credits from grant {grant.pk}."

        page = ActionPage(
            title=f"Claw back credits from {account.public_id}",
            permission="console.clawback_credits",
            target=account,
            done_url=self._page_url(account),
            perform=perform,
            summary=lambda d: [
                ("Account", account.public_id),
                ("Grant", f"grant {d['grant'].pk} ({d['grant'].source}, {d['grant'].remaining} left)"),
                ("Credits", d["credits"]),
                ("Reason", d["reason"]),
            ],
            warning="Only what the lot still has unspent can be taken back.",
        )
        return action_view(self, request, page, ClawbackForm(request.POST or None, account=account))

    def suspend_view(self, request: HttpRequest, object_id: str, suspend: bool) -> HttpResponse:
        account = self._account(request, object_id)
        verb = "Suspend" if suspend else "Reactivate"

        def perform(data: dict[str, Any], confirmation: str) -> str:
            _, changed = account_status_change(
                operator=operator_of(request),
                account=account,
                suspend=suspend,
                reason=data["reason"],
                confirmation=confirmation,
            )
            return f"{account.public_id} is {'now' if changed else 'already'} {'suspended' if suspend else 'active'}."

        page = ActionPage(
            title=f"{verb} {account.public_id}",
            permission="console.suspend_account",
            target=account,
            done_url=self._page_url(account),
            perform=perform,
            summary=lambda d: [("Account", account.public_id), ("Status now", account.status), ("Reason", d["reason"])],
            warning="A suspended account cannot spend or buy, and gets no free credits; its pending holds can "
            "still be captured or released."
            if suspend
            else "",
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))


@admin.register(ServiceKey)
class ServiceKeyAdmin(MadeByServicesAdmin):
    # Made (or with `manage.py create_service_key`) and revoked by the action pages below;
    # debits and entries name them, so none is deleted.
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ("name", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    change_form_template = "admin/console/servicekey_change_form.html"
    change_list_template = "admin/console/servicekey_change_list.html"
    actions_pages = {"revoke": "revoke_view"}  # noqa: RUF012

    def get_urls(self) -> list[URLPattern]:
        create = path("create/", self.admin_site.admin_view(self.create_view), name="accounts_servicekey_create")
        return [create, *super().get_urls()]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        key: ServiceKey = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            service_key_revoke_audited(
                operator=operator_of(request), key=key, reason=data["reason"], confirmation=confirmation
            )
            return f"Revoked {key}."

        page = ActionPage(
            title=f"Revoke {key}",
            permission="console.manage_service_keys",
            target=key,
            done_url=reverse("admin:accounts_servicekey_change", args=[key.pk]),
            perform=perform,
            summary=lambda d: [("Key", str(key)), ("Reason", d["reason"])],
            warning="Calls made with this key are refused from now on.",
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))

    def create_view(self, request: HttpRequest) -> HttpResponse:
        def perform(data: dict[str, Any], confirmation: str) -> HttpResponse:
            key, raw = service_key_create_audited(
                operator=operator_of(request), name=data["name"], reason=data["reason"], confirmation=confirmation
            )
            context = {
                **self.admin_site.each_context(request),
                "title": "Service key created",
                "key": key,
                "raw": raw,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/console/key_created.html", context)

        page = ActionPage(
            title="Create a service key",
            permission="console.manage_service_keys",
            target=None,
            done_url=reverse("admin:accounts_servicekey_changelist"),
            perform=perform,
            summary=lambda d: [("Name", d["name"]), ("Reason", d["reason"])],
            warning="The key is shown once, on the next page; only its hash is kept.",
        )
        return action_view(self, request, page, ServiceKeyCreateForm(request.POST or None))


@admin.register(UserToken)
class UserTokenAdmin(MadeByServicesAdmin):
    # Users make tokens (POST /auth/token); an operator revokes one with the action page below.
    list_display = ["user", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ("user", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    search_fields = ["user__email"]
    list_select_related = ["user"]
    change_form_template = "admin/console/usertoken_change_form.html"
    actions_pages = {"revoke": "revoke_view"}  # noqa: RUF012

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        token: UserToken = self._found(request, object_id)

        def perform(data: dict[str, Any], confirmation: str) -> str:
            revoked = user_token_revoke_audited(
                operator=operator_of(request), token=token, reason=data["reason"], confirmation=confirmation
            )
            return f"Revoked {token}." if revoked else f"{token} was already revoked."

        page = ActionPage(
            title=f"Revoke the personal token {token}",
            permission="console.revoke_user_token",
            target=token,
            done_url=reverse("admin:accounts_usertoken_change", args=[token.pk]),
            perform=perform,
            summary=lambda d: [("Token", str(token)), ("Reason", d["reason"])],
            warning="Calls made with this token are refused from now on; the user can make a new one.",
        )
        return action_view(self, request, page, ReasonForm(request.POST or None))
