"""Operators run the waitlist here: admit, skip or remove entries, and set the weekly quota.
Deciding on entries (and emailing an invitation again) takes waitlist.decide_waitlistentry,
which no role has: the roles' view permission shows the waitlist, nothing more."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import AdmissionWeek, Invitation, WaitlistEntry, WaitlistPolicy
from .services import entries_admit, entries_remove, entries_skip, policy_get
from .tasks import invitations_email

DECIDE = "waitlist.decide_waitlistentry"


class InvitationInline(admin.StackedInline):
    model = Invitation
    can_delete = False
    extra = 0
    readonly_fields = ["email", "created_at", "expires_at", "emailed_at", "used_at", "used_by"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # the admit action makes invitations, and emails them


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    list_display = ["email", "status", "joined_at", "decided_at", "decided_by"]
    list_filter = ["status"]
    search_fields = ["email"]
    ordering = ["joined_at", "id"]
    readonly_fields = ["status", "joined_at", "decided_at", "decided_by"]
    inlines = [InvitationInline]
    actions = ["admit", "skip", "remove"]

    @admin.action(
        description="Admit: invite the selected entries now (outside the weekly quota)", permissions=["decide"]
    )
    def admit(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        invited = entries_admit(entry_ids=queryset.values_list("pk", flat=True), by=str(request.user))
        invitations_email(invited)
        self.message_user(request, f"Invited {len(invited)}; their emails are on their way.")

    @admin.action(
        description="Skip: leave the selected waiting entries out of the weekly admission", permissions=["decide"]
    )
    def skip(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        skipped = entries_skip(entry_ids=queryset.values_list("pk", flat=True), by=str(request.user))
        self.message_user(request, f"Skipped {skipped}.")

    @admin.action(
        description="Remove the selected entries (an unused invitation stops working)", permissions=["decide"]
    )
    def remove(self, request: HttpRequest, queryset: QuerySet[WaitlistEntry]) -> None:
        removed = entries_remove(entry_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Removed {removed} entries and invitations.")

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DECIDE)

    def get_actions(self, request):  # type: ignore[no-untyped-def]
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "remove" says what removing withdraws
        return actions


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "created_at", "expires_at", "emailed_at", "used_at"]
    search_fields = ["email"]
    readonly_fields = ["entry", "email", "created_at", "expires_at", "emailed_at", "used_at", "used_by"]
    list_filter = [("emailed_at", admin.EmptyFieldListFilter), ("used_at", admin.EmptyFieldListFilter)]
    actions = ["email_again"]

    @admin.action(description="Email the selected unused invitations again", permissions=["decide"])
    def email_again(self, request: HttpRequest, queryset: QuerySet[Invitation]) -> None:
        ids = list(queryset.filter(used_at__isnull=True).values_list("pk", flat=True))
        invitations_email(ids)
        self.message_user(request, f"Emailing {len(ids)} again.")

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DECIDE)

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # the entries' admit action makes invitations, and emails them


@admin.register(WaitlistPolicy)
class WaitlistPolicyAdmin(admin.ModelAdmin):
    list_display = ["weekly_quota"]

    def changelist_view(self, request, extra_context=None):  # type: ignore[no-untyped-def]
        policy_get()  # the row operators edit, made from WAITLIST_WEEKLY_QUOTA if it is missing
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # one row, made on first use from WAITLIST_WEEKLY_QUOTA

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(AdmissionWeek)
class AdmissionWeekAdmin(admin.ModelAdmin):
    list_display = ["week_start", "admitted"]
    readonly_fields = ["week_start", "admitted"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
