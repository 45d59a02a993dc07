"""Credits and their movements: operations, lots (grants), debits, holds, the ledger, keys, jobs."""

from __future__ import annotations

import pgtrigger
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.lookups import Exact, GreaterThan, IsNull
from django.utils import timezone

from accounts.ids import random_id
from accounts.models import Account
from config.constraints import one_of


def new_debit_id() -> str:
    return random_id("deb_")


def new_hold_id() -> str:
    return random_id("hold_")


class ActorType(models.TextChoices):
    SERVICE = "service", "service key"
    USER = "user", "end user"
    STAFF = "staff", "staff user"
    SYSTEM = "system", "system task"


class Operation(models.Model):
    """A priced action of the generation service; operators edit the price in admin."""

    code = models.SlugField(max_length=50, unique=True)
    credits = models.BigIntegerField()
    description = models.CharField(max_length=200, blank=True, default="")
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(credits__gt=0), name="operation_credits_positive")]

    def __str__(self) -> str:
        return f"{self.code} ({self.credits} credits)"


class Grant(models.Model):
    """A lot of credits. Immutable except `remaining`, which only the ledger service changes, and
    `voided_at`, set once when an operator voids the lot (credits coming back to it are voided)."""

    class Source(models.TextChoices):
        FREE_MONTHLY = "free_monthly"
        PURCHASE = "purchase"
        ADJUSTMENT = "adjustment"
        PROMO = "promo"

    # Indexed by grant_one_free_per_period, whose leading column is the account.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="grants", db_index=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(default=100)
    # The free-credit period this grant belongs to (free_monthly only): one grant per period.
    period_start = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    voided_at = models.DateTimeField(null=True, blank=True)
    # Whether the lot still holds credits, kept by the database. The spendable index names this
    # column, not `remaining`: a debit that leaves credits in the lot changes no indexed value,
    # so PostgreSQL updates the row in place (a HOT update, no new index entries), and only the
    # debit that empties a lot, or the refund that refills it, moves it in or out of the index.
    # Queries for an account's spendable lots say `spendable` so that they can use the index.
    spendable = models.GeneratedField(
        expression=GreaterThan(F("remaining"), 0), output_field=models.BooleanField(), db_persist=True
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="grant_amount_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=F("amount")), name="grant_remaining_in_range"
            ),
            models.CheckConstraint(
                condition=one_of("source", ["free_monthly", "purchase", "adjustment", "promo"]),
                name="grant_source_valid",
            ),
            models.CheckConstraint(
                # (period_start IS NOT NULL) = (source = 'free_monthly'): the short form of "a
                # period for free grants, and only for them" (config/constraints.py says why short).
                condition=Exact(IsNull(F("period_start"), False), Exact(F("source"), Value("free_monthly"))),
                name="grant_period_only_for_free",
            ),
            # One free grant per account and period. Not partial: only free grants have a
            # period_start (grant_period_only_for_free) and NULLs never conflict, so it enforces
            # the same thing, and its index also serves every lookup of an account's grants (the
            # refill writes one index entry per grant fewer than with a separate account index).
            models.UniqueConstraint(fields=["account", "period_start"], name="grant_one_free_per_period"),
        ]
        indexes = [
            # Spend order lookups touch only lots that still hold credits.
            models.Index(
                fields=["account", "expires_at", "priority", "id"],
                condition=Q(spendable=True),
                name="grant_spendable_idx",
            ),
        ]
        # No index on expires_at alone: every grant insert paid for one, and its only user was
        # the hourly expiry job's search for accounts with lapsed lots, which reads the spendable
        # index whole instead (about half a second per 1.5M lots).

    def __str__(self) -> str:
        return f"{self.source} {self.remaining}/{self.amount} ({self.account_id})"


class Debit(models.Model):
    # Unique through debit_public_id_unique (Meta), without the unused varchar_pattern_ops
    # index that unique=True adds (see Account.public_id).
    public_id = models.CharField(max_length=32, default=new_debit_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="debits")
    credits = models.BigIntegerField()
    operation = models.CharField(max_length=50, blank=True, default="")
    reference = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["public_id"], name="debit_public_id_unique"),
            models.CheckConstraint(condition=Q(credits__gt=0), name="debit_credits_positive"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def status(self) -> str:
        return "refunded" if self.refunded_at else "succeeded"


class Hold(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CAPTURED = "captured"
        RELEASED = "released"
        EXPIRED = "expired"

    # Unique through hold_public_id_unique (Meta), as Debit.public_id.
    public_id = models.CharField(max_length=32, default=new_hold_id, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    credits = models.BigIntegerField()
    captured_credits = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    operation = models.CharField(max_length=50, blank=True, default="")
    reference = models.CharField(max_length=255, blank=True, default="")
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["public_id"], name="hold_public_id_unique"),
            models.CheckConstraint(condition=Q(credits__gt=0), name="hold_credits_positive"),
            models.CheckConstraint(
                condition=Q(captured_credits__gte=0) & Q(captured_credits__lte=F("credits")),
                name="hold_captured_in_range",
            ),
            models.CheckConstraint(
                condition=one_of("status", ["pending", "captured", "released", "expired"]), name="hold_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(status="pending"), name="hold_pending_expiry_idx"),
            models.Index(
                fields=["account", "expires_at"], condition=Q(status="pending"), name="hold_account_pending_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


LEDGER_KINDS = ["grant", "debit", "hold", "release", "capture", "refund", "expire", "clawback", "void", "adjust"]


class LedgerEntry(models.Model):
    """One change of one grant's `remaining` or of one hold. Never updated, never deleted.

    `credits` is the signed change to the grant's remaining (and so to the account's cached
    available balance); `held_credits` the signed change to the account's held balance.
    """

    class Kind(models.TextChoices):
        GRANT = "grant"
        DEBIT = "debit"
        HOLD = "hold"
        RELEASE = "release"
        CAPTURE = "capture"
        REFUND = "refund"
        EXPIRE = "expire"
        CLAWBACK = "clawback"
        VOID = "void"
        ADJUST = "adjust"

    # Indexed by ledger_account_newest_idx, whose leading column is the account.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    credits = models.BigIntegerField()
    held_credits = models.BigIntegerField(default=0)
    balance_after = models.BigIntegerField()
    held_after = models.BigIntegerField()
    # Partial indexes below: most entries name only some of these, and bulk writers (the
    # monthly refill) should not pay for indexing NULLs.
    grant = models.ForeignKey(
        Grant, on_delete=models.PROTECT, null=True, blank=True, related_name="entries", db_index=False
    )
    hold = models.ForeignKey(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="entries", db_index=False
    )
    debit = models.ForeignKey(
        Debit, on_delete=models.PROTECT, null=True, blank=True, related_name="entries", db_index=False
    )
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    reference = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(condition=one_of("kind", LEDGER_KINDS), name="ledger_kind_valid"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0) & Q(held_after__gte=0), name="ledger_after_nonnegative"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "-id"], name="ledger_account_newest_idx"),
            models.Index(fields=["grant"], condition=Q(grant__isnull=False), name="ledger_grant_idx"),
            models.Index(fields=["hold"], condition=Q(hold__isnull=False), name="ledger_hold_idx"),
            models.Index(fields=["debit"], condition=Q(debit__isnull=False), name="ledger_debit_idx"),
        ]
        triggers = [
            # The ledger is append-only: a correction is a new entry. Enforced in PostgreSQL so
            # that no code path, admin action or superuser session can rewrite history.
            pgtrigger.Protect(name="ledger_append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.credits:+d} ({self.account_id})"


class IdempotencyKey(models.Model):
    """The first response to a credit-moving POST, replayed for retries with the same key."""

    scope = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"


class BillingPolicy(models.Model):
    """The free-credit policy operators change in admin without a deploy (a single row).

    Changes apply from the next grant on; grants already made keep their amount and expiry,
    and accounts keep the anchor day they were given at signup.
    """

    free_credits_first_period = models.BigIntegerField()
    free_credits_per_period = models.BigIntegerField()
    latest_anchor_day = models.PositiveSmallIntegerField(
        help_text="Signups after this day of the month anchor their periods on it (1-28)."
    )
    # The quotas of every account without its own (blank: the setting of the same name decides).
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Spends a minute per account; 0 turns the limit off. Blank: the setting."
    )
    rate_limit_burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Spends an account may make at once (1 or more). Blank: the setting.",
    )
    daily_cap_credits = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Credits an account may spend per UTC day; 0: no cap. Blank: the setting."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "billing policy"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="policy_single_row"),
            models.CheckConstraint(
                condition=Q(free_credits_first_period__gte=0)
                & Q(free_credits_first_period__lte=1_000_000)
                & Q(free_credits_per_period__gte=0)
                & Q(free_credits_per_period__lte=1_000_000),
                name="policy_credits_range",
            ),
            models.CheckConstraint(
                condition=Q(latest_anchor_day__gte=1) & Q(latest_anchor_day__lte=28), name="policy_anchor_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.free_credits_first_period} then {self.free_credits_per_period} free credits"


class JobRun(models.Model):
    """One run of a chunked, fanned-out job (monthly refill, grant expiry, hold timeouts)."""

    class Job(models.TextChoices):
        REFILL = "refill"
        EXPIRE_GRANTS = "expire_grants"
        RELEASE_HOLDS = "release_holds"

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        ABANDONED = "abandoned"

    job = models.CharField(max_length=20, choices=Job.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    # The business time the run works at: every chunk uses it, whenever it executes.
    as_of = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Wall-clock time of the last chunk done (or of the start): a run that stops moving is stale.
    progressed_at = models.DateTimeField()
    chunks_total = models.IntegerField(default=0)
    chunks_done = models.IntegerField(default=0)
    rows_done = models.BigIntegerField(default=0, help_text="Grants made, lots expired or holds released.")
    credits_moved = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_job_recent_idx")]

    def __str__(self) -> str:
        return f"{self.job} run {self.pk} ({self.status})"

    @property
    def duration(self):  # type: ignore[no-untyped-def]
        return (self.finished_at - self.started_at) if self.finished_at else None


class JobChunk(models.Model):
    """An account-id range [first_account_id, last_account_id] of a run, done in one transaction."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        FAILED = "failed"  # retries ran out; the next run of the job covers these accounts again

    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="chunks")
    first_account_id = models.BigIntegerField()
    last_account_id = models.BigIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    rows_done = models.BigIntegerField(default=0)
    credits_moved = models.BigIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    failures = models.IntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["run", "status"], name="jobchunk_run_status_idx")]

    def __str__(self) -> str:
        return f"chunk {self.first_account_id}-{self.last_account_id} of run {self.run_id}"


# --- Credit packs, purchases and Stripe (issue 4) ----------------------------------------------
