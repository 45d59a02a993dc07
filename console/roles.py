"""The operators' roles, as Django groups: `support` and `finance`.

Both see everything in the admin (every model's view permission, those of models added later
included: the roles are synced after every migrate). Support grants credits up to a limit
(SUPPORT_GRANT_LIMIT_CREDITS per grant), suspends and reactivates accounts, replays failed
Stripe events and resends webhook deliveries; finance refunds, claws back, voids grants and edits packs, prices and the
free-credit policy. Superusers may do everything. Neither role may grant over the limit, make
or revoke service keys, revoke users' personal tokens, admit, skip or remove waitlist entries,
or change beat's schedules: those permissions are for superusers, or whoever an administrator
gives them to.
"""

from __future__ import annotations

from typing import Any

SUPPORT = "support"
FINANCE = "finance"

ROLE_PERMISSIONS = {
    SUPPORT: [
        ("console", "grant_credits"),
        ("console", "suspend_account"),
        ("console", "replay_stripe_event"),
        ("notifications", "resend_webhookdelivery"),
    ],
    FINANCE: [
        ("console", "refund_purchase"),
        ("console", "clawback_credits"),
        ("console", "void_grant"),
        ("billing", "add_creditpack"),
        ("billing", "change_creditpack"),
        ("billing", "add_operation"),
        ("billing", "change_operation"),
        ("billing", "add_billingpolicy"),  # the policy row, if none was made yet
        ("billing", "change_billingpolicy"),
    ],
}
# Views of these apps' models are internals nobody operates: sessions, content types.
NOT_SHOWN = {"sessions", "contenttypes"}


def roles_sync(apps: Any) -> None:
    """Create the groups if missing and give them their permissions (never takes any away: an
    administrator may have widened a role)."""
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    views = permission_model.objects.filter(codename__startswith="view_").exclude(content_type__app_label__in=NOT_SHOWN)
    for role, wanted in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        own = [
            found
            for app_label, codename in wanted
            for found in permission_model.objects.filter(content_type__app_label=app_label, codename=codename)
        ]
        group.permissions.add(*views, *own)


def roles_sync_signal(sender: Any, apps: Any = None, **kwargs: Any) -> None:
    from django.apps import apps as global_apps

    roles_sync(global_apps)
