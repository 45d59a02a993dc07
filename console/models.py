"""The audit trail of operators' and services' actions, and the ledger's daily rollup."""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Account


class AuditRecord(models.Model):
    """Who did what to which account or object, why, and with which amounts. Append-only."""

    class Action(models.TextChoices):
        GRANT = "grant"
        CLAWBACK = "clawback"
        VOID = "void"
        SUSPEND = "suspend"
        REACTIVATE = "reactivate"
        REFUND = "refund"
        REPLAY_EVENT = "replay_event"
        REVOKE_KEY = "revoke_key"
        CREATE_KEY = "create_key"
        REVOKE_TOKEN = "revoke_token"  # a user's personal token

    class ActorType(models.TextChoices):
        STAFF = "staff", "staff user"
        SERVICE = "service", "service key"
        COMMAND = "command", "management command"

    created_at = models.DateTimeField(default=timezone.now)
    actor_type = models.CharField(max_length=8, choices=ActorType.choices)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The staff user's email or the service key's id and name, as they were at the time.
    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=16, choices=Action.choices)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The object acted on, by its public id (acct_, pur_, ...) or its kind and id (grant 12).
    target = models.CharField(max_length=255)
    reason = models.TextField()
    credits = models.BigIntegerField(null=True, blank=True)
    amount_cents = models.BigIntegerField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # The signed confirmation the action was carried out under: a second submission of the same
    # confirmation (a double click, a resent form) finds it taken and does nothing.
    confirmation = models.CharField(max_length=64, null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(reason__regex=r"\S"), name="audit_reason_required"),
            models.CheckConstraint(
                condition=Q(actor_type__in=["service", "command"]) | Q(staff_user__isnull=False),
                name="audit_staff_named",
            ),
            models.UniqueConstraint(
                fields=["confirmation"], condition=Q(confirmation__isnull=False), name="audit_confirmation_once"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "-id"], condition=Q(account__isnull=False), name="audit_account_idx"),
        ]
        triggers = [
            # The trail is evidence: nobody rewrites it, superusers included.
            pgtrigger.Protect(name="audit_append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]
        permissions = [
            ("grant_credits", "Grant credits (up to the support limit)"),
            ("grant_credits_unlimited", "Grant credits over the support limit"),
            ("clawback_credits", "Claw back credits"),
            ("void_grant", "Void a grant's remaining credits"),
            ("suspend_account", "Suspend and reactivate accounts"),
            ("refund_purchase", "Refund purchases"),
            ("replay_stripe_event", "Process failed Stripe events again"),
            ("manage_service_keys", "Create and revoke service keys"),
            ("revoke_user_token", "Revoke users' personal tokens"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target} by {self.actor}"


class DailyRollup(models.Model):
    """The ledger's movements summed per UTC day, kept by the rollup job (console.rollup)."""

    day = models.DateField(primary_key=True)
    granted_free_credits = models.BigIntegerField(default=0)  # free_monthly and promo grants
    granted_paid_credits = models.BigIntegerField(default=0)  # purchase grants
    granted_adjustment_credits = models.BigIntegerField(default=0)
    spent_credits = models.BigIntegerField(default=0)  # debits and captures, less debit refunds
    expired_credits = models.BigIntegerField(default=0)
    clawed_back_credits = models.BigIntegerField(default=0)
    voided_credits = models.BigIntegerField(default=0)
    revenue_cents = models.BigIntegerField(default=0)  # purchases paid (their grant's day)
    # The change of unspent paid credits that day and of their value at each purchase's price.
    paid_credits_change = models.BigIntegerField(default=0)
    paid_value_change_cents = models.DecimalField(max_digits=24, decimal_places=6, default=0)

    class Meta:
        verbose_name = "overview"
        verbose_name_plural = "overview"

    def __str__(self) -> str:
        return str(self.day)


class RollupState(models.Model):
    """How far the rollup has read the ledger (a single row)."""

    rolled_up_to_id = models.BigIntegerField(default=0)
    rolled_up_at = models.DateTimeField(null=True, blank=True)
    # The ledger's highest id when last looked at, and when (the database's clock): the next run
    # rolls up to it once every transaction open at that moment has ended.
    mark_id = models.BigIntegerField(default=0)
    mark_taken_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="rollup_state_single_row")]

    def __str__(self) -> str:
        return f"rolled up to entry {self.rolled_up_to_id}"
