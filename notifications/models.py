"""Notifications: the outbox of events, their deliveries (signed webhooks, emails), each user's
preferences, and auto-recharge.

Three columns of accounts_account belong to this app and are not fields of accounts.Account:
`low_balance_threshold_credits` (the effective threshold: LOW_BALANCE_THRESHOLD_CREDITS or the
account's own), `balance_low` (whether balance.low was raised last, not balance.recovered) and
`auto_recharge_threshold_credits` (0 when auto-recharge is off). The balance trigger
(billing/sql/billing_balance_crossed.sql) reads them from the row being updated, so a debit that
crosses no threshold costs no query (they are made by migration 0002). They are written only by
notifications.services.preferences and notifications.services.recharge.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.ids import random_id
from accounts.models import Account


def new_event_id() -> str:
    return random_id("evt_")


def new_endpoint_id() -> str:
    return random_id("we_")


def new_recharge_id() -> str:
    return random_id("rch_")


class EventType(models.TextChoices):
    BALANCE_LOW = "balance.low"
    BALANCE_RECOVERED = "balance.recovered"
    CREDITS_EXPIRING = "credits.expiring"
    PURCHASE_PAID = "purchase.paid"
    PURCHASE_REFUNDED = "purchase.refunded"
    AUTO_RECHARGE_SUCCEEDED = "auto_recharge.succeeded"
    AUTO_RECHARGE_FAILED = "auto_recharge.failed"
    ACCOUNT_SUSPENDED = "account.suspended"


class Event(models.Model):
    """One event, raised in the transaction of the change that caused it (the outbox). It is
    fanned out to deliveries once, after commit (`dispatched_at`)."""

    public_id = models.CharField(max_length=32, unique=True, default=new_event_id, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="events")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(type__in=EventType.values), name="event_type_valid"),
        ]
        indexes = [
            models.Index(fields=["id"], condition=Q(dispatched_at__isnull=True), name="event_undispatched_idx"),
            models.Index(fields=["account", "-id"], name="event_account_newest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"

    def payload(self) -> dict:
        """The JSON every webhook endpoint receives for this event."""
        return {
            "id": self.public_id,
            "type": self.type,
            "created": self.created_at.isoformat().replace("+00:00", "Z"),
            "account": self.account.public_id,
            "data": self.data,
        }


class WebhookEndpoint(models.Model):
    """Where the generation service wants events POSTed, signed with `secret`."""

    public_id = models.CharField(max_length=32, unique=True, default=new_endpoint_id, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    # Event types sent to this endpoint; empty means every type.
    event_types = models.JSONField(default=list, blank=True)
    # Kept in clear: every delivery is signed with it. Shown to the caller once, at creation.
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=255, blank=True, default="")
    deleted_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.public_id} {self.url}"

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookDelivery(models.Model):
    """One event to one endpoint: attempted until it succeeds or has been failing for the
    retry window (WEBHOOK_RETRY_HOURS)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="webhook_deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # An attempt under way holds the delivery until then (null: none under way): neither the
    # retry sweep nor an operator's resend starts a second one beside it.
    leased_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed"]), name="webhook_delivery_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_delivery_due_idx"),
        ]
        verbose_name_plural = "webhook deliveries"
        # The admin's resend action (support's role has it; seeing deliveries is not enough).
        permissions = [("resend_webhookdelivery", "Resend webhook deliveries")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint.public_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the endpoint answered, how fast, or why it failed."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    succeeded = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.attempted_at:%Y-%m-%d %H:%M:%S}: {self.status_code or self.error[:40]}"


class EmailDelivery(models.Model):
    """The email an event sends its account's user: at most one per event, attempted until it is
    sent or has failed MAX_ATTEMPTS times (notifications.services.emails)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    event = models.OneToOneField(Event, on_delete=models.PROTECT, related_name="email")
    to = models.EmailField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due: after a failed one's backoff, or once an attempt under way
    # has had its time; the retry sweep queues a pending email from then on.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "email deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="email_delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.to}"


class NotificationPreferences(models.Model):
    """A user's choices: their own low-balance threshold and the email kinds they switched off."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="notification_preferences")
    # None: LOW_BALANCE_THRESHOLD_CREDITS. The effective value is the account's column.
    low_balance_threshold_credits = models.BigIntegerField(null=True, blank=True)
    emails_off = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "notification preferences"
        constraints = [
            models.CheckConstraint(
                condition=Q(low_balance_threshold_credits__isnull=True) | Q(low_balance_threshold_credits__gte=0),
                name="preferences_threshold_nonnegative",
            ),
        ]

    def __str__(self) -> str:
        return f"preferences of {self.account_id}"


class ExpiringNotice(models.Model):
    """credits.expiring was raised for this lot: once per lot, whoever runs the job."""

    grant = models.OneToOneField("billing.Grant", on_delete=models.CASCADE, related_name="expiring_notice")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"credits.expiring of grant {self.grant_id}"


class AutoRecharge(models.Model):
    """A user's standing order: buy `pack` when available credits fall below `threshold_credits`,
    at most `monthly_cap_cents` a calendar month (UTC), with the card saved through a SetupIntent.

    `state` is the compare-and-set that makes one recharge per crossing: the balance trigger moves
    it from idle to queued (and writes the Recharge) only once, however many spends race; it goes
    back to idle when that recharge ends.
    """

    class State(models.TextChoices):
        IDLE = "idle"
        QUEUED = "queued"

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="auto_recharge")
    enabled = models.BooleanField(default=False)
    pack = models.ForeignKey("billing.CreditPack", on_delete=models.PROTECT, null=True, blank=True)
    threshold_credits = models.BigIntegerField(default=10)
    monthly_cap_cents = models.BigIntegerField(default=0)
    stripe_payment_method_id = models.CharField(max_length=255, blank=True, default="")
    card_brand = models.CharField(max_length=32, blank=True, default="")
    card_last4 = models.CharField(max_length=4, blank=True, default="")
    state = models.CharField(max_length=12, choices=State.choices, default=State.IDLE)
    consecutive_failures = models.PositiveSmallIntegerField(default=0)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(state__in=["idle", "queued"]), name="auto_recharge_state_valid"),
            models.CheckConstraint(
                condition=Q(threshold_credits__gte=1) & Q(monthly_cap_cents__gte=0), name="auto_recharge_amounts_valid"
            ),
            models.CheckConstraint(
                condition=Q(enabled=False) | (Q(pack__isnull=False) & ~Q(stripe_payment_method_id="")),
                name="auto_recharge_enabled_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"auto-recharge of {self.account_id}"


class Recharge(models.Model):
    """One automatic purchase: queued by the balance trigger, charged off-session by a task, and
    paid when the payment's webhook fulfils its purchase like any other."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        CHARGING = "charging"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"  # nothing to do (back above the threshold), the cap reached, the pack not sold

    public_id = models.CharField(max_length=32, unique=True, default=new_recharge_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="recharges")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    purchase = models.OneToOneField(
        "billing.Purchase", on_delete=models.PROTECT, null=True, blank=True, related_name="recharge"
    )
    quantity = models.PositiveIntegerField(default=0)
    amount_cents = models.BigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # When the task decided the charge (queued -> charging): the month whose cap it counts in.
    charged_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "charging", "succeeded", "failed", "skipped"]),
                name="recharge_status_valid",
            ),
            # The trigger's compare-and-set makes one open recharge per account; this holds it.
            models.UniqueConstraint(
                fields=["account"], condition=Q(status__in=["queued", "charging"]), name="recharge_one_open"
            ),
        ]
        indexes = [models.Index(fields=["account", "-created_at"], name="recharge_account_newest_idx")]

    def __str__(self) -> str:
        return self.public_id

    @property
    def idempotency_key(self) -> str:
        # Derived from this row: a retried charge can never charge twice.
        return f"recharge-{self.public_id}"
