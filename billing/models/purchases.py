"""Credit packs, purchases, refunds and Stripe's customers and events."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.ids import random_id
from accounts.models import Account

from .ledger import Grant


def new_purchase_id() -> str:
    return random_id("pur_")


def new_purchase_refund_id() -> str:
    return random_id("rfnd_")


class CreditPack(models.Model):
    """What end users can buy: `credits` for `price_cents` (integer cents of `currency`)."""

    slug = models.SlugField(max_length=50, unique=True, help_text="The id clients name in POST /me/checkout.")
    name = models.CharField(max_length=100)
    credits = models.BigIntegerField()
    price_cents = models.BigIntegerField()
    currency = models.CharField(
        max_length=3, default="usd", validators=[RegexValidator(r"^[a-z]{3}$", "A lowercase ISO 4217 code.")]
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="pack_credits_positive"),
            # Stripe's smallest USD charge is 50 cents; its largest is $999,999.99.
            models.CheckConstraint(
                condition=Q(price_cents__gte=50) & Q(price_cents__lte=99_999_999), name="pack_price_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.credits} credits for {self.price_cents} {self.currency} cents)"


class Purchase(models.Model):
    """One payment for a pack: a Checkout Session or a PaymentIntent. Grants its credits once.

    Written only by billing.services.purchases, always under the account's row lock when credits
    move with it (fulfilment, refunds, disputes).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"
        REFUNDED = "refunded"
        PARTIALLY_REFUNDED = "partially_refunded"
        DISPUTED = "disputed"
        CANCELED = "canceled"

    class Flow(models.TextChoices):
        CHECKOUT = "checkout"
        PAYMENT_INTENT = "payment_intent"

    public_id = models.CharField(max_length=32, unique=True, default=new_purchase_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="purchases")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="purchases")
    flow = models.CharField(max_length=16, choices=Flow.choices)
    quantity = models.PositiveIntegerField(default=1)
    # Copied from the pack at purchase time: a later price change does not touch this purchase.
    credits = models.BigIntegerField()
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    stripe_checkout_session_id = models.CharField(max_length=255, null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, null=True, blank=True)
    stripe_charge_id = models.CharField(max_length=255, null=True, blank=True)
    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, null=True, blank=True, related_name="purchase")
    # Money that went back to the customer: refunds (Stripe's running total) and lost disputes.
    refunded_cents = models.BigIntegerField(default=0)
    disputed_cents = models.BigIntegerField(default=0)
    # Of the credits those reversals cost, what was taken back and what had already been spent.
    clawed_back_credits = models.BigIntegerField(default=0)
    unrecoverable_credits = models.BigIntegerField(default=0)
    flagged_for_review = models.BooleanField(default=False, help_text="Set when a dispute is lost.")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)
    # When the purchased credits expire: 12 calendar months after payment.
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "paid", "refunded", "partially_refunded", "disputed", "canceled"]),
                name="purchase_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(quantity__gte=1) & Q(credits__gt=0) & Q(amount_cents__gt=0),
                name="purchase_amounts_positive",
            ),
            # Paid (or later refunded or disputed) means granted, and only then.
            models.CheckConstraint(
                condition=(
                    Q(status__in=["pending", "canceled"], grant__isnull=True, paid_at__isnull=True)
                    | (
                        ~Q(status__in=["pending", "canceled"])
                        & Q(grant__isnull=False, paid_at__isnull=False, expires_at__isnull=False)
                    )
                ),
                name="purchase_paid_iff_granted",
            ),
            models.CheckConstraint(
                condition=Q(refunded_cents__gte=0)
                & Q(refunded_cents__lte=F("amount_cents"))
                & Q(disputed_cents__gte=0)
                & Q(disputed_cents__lte=F("amount_cents")),
                name="purchase_reversed_cents_range",
            ),
            models.CheckConstraint(
                condition=Q(clawed_back_credits__gte=0)
                & Q(unrecoverable_credits__gte=0)
                & Q(clawed_back_credits__lte=F("credits") - F("unrecoverable_credits")),
                name="purchase_clawback_range",
            ),
            models.UniqueConstraint(
                fields=["stripe_checkout_session_id"],
                condition=Q(stripe_checkout_session_id__isnull=False),
                name="purchase_checkout_session_unique",
            ),
            models.UniqueConstraint(
                fields=["stripe_payment_intent_id"],
                condition=Q(stripe_payment_intent_id__isnull=False),
                name="purchase_payment_intent_unique",
            ),
            models.UniqueConstraint(
                fields=["stripe_charge_id"],
                condition=Q(stripe_charge_id__isnull=False),
                name="purchase_charge_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="purchase_account_newest_idx"),
            models.Index(fields=["created_at"], condition=Q(status="pending"), name="purchase_pending_idx"),
        ]

    def __str__(self) -> str:
        return self.public_id


class PurchaseRefund(models.Model):
    """An operator's refund: recorded before Stripe is called, its result recorded after."""

    class Status(models.TextChoices):
        REQUESTED = "requested"  # recorded; Stripe not answered yet (or the call was cut short)
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    public_id = models.CharField(max_length=32, unique=True, default=new_purchase_refund_id, editable=False)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.REQUESTED)
    stripe_refund_id = models.CharField(max_length=255, null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    requested_by = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_cents__gt=0), name="purchase_refund_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["requested", "pending", "succeeded", "failed", "canceled"]),
                name="purchase_refund_status_valid",
            ),
            models.UniqueConstraint(
                fields=["stripe_refund_id"],
                condition=Q(stripe_refund_id__isnull=False),
                name="purchase_refund_stripe_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def idempotency_key(self) -> str:
        # Derived from this row: a retried call can never refund twice.
        return f"refund-{self.public_id}"


class StripeCustomer(models.Model):
    """The one Stripe Customer of an account, created when first needed."""

    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="stripe_customer")
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.stripe_customer_id


class StripeEvent(models.Model):
    """A webhook event exactly as Stripe sent it, stored before it is processed."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        FAILED = "failed"
        IGNORED = "ignored"

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    api_version = models.CharField(max_length=64, blank=True, default="")
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True, default="")
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="events")
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["received", "processed", "failed", "ignored"]), name="stripe_event_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["-received_at"], name="stripe_event_newest_idx"),
            models.Index(
                fields=["status"], condition=Q(status__in=["received", "failed"]), name="stripe_event_open_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id}"
