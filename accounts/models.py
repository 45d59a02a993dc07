from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from config.constraints import one_of

from .ids import new_account_id


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        # Plain users are created through billing.signup.user_signup, which also opens the
        # account; this path serves Django's own tooling (createsuperuser, tests).
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # When the user proved they receive mail at `email` (the signed link signup sends); null
    # until then. Free credits wait for it where EMAIL_VERIFICATION_REQUIRED is on.
    email_verified_at = models.DateTimeField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []  # noqa: RUF012 - Django reads this class attribute

    def __str__(self) -> str:
        return self.email


class Account(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    # Unique through account_public_id_unique (Meta): a plain unique index, without the
    # varchar_pattern_ops copy Django adds for unique=True, which no query uses (public ids
    # are only ever looked up whole) and every account insert would pay for.
    public_id = models.CharField(max_length=32, default=new_account_id, editable=False)
    user = models.OneToOneField(User, on_delete=models.PROTECT, related_name="account")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    # Day of the month on which this account's free-credit periods start (1..28, checked by
    # account_anchor_day_range alone: every check is paid on each balance write).
    period_anchor_day = models.SmallIntegerField()
    # The first period starts on this date; later ones start on period_anchor_day each month.
    first_period_start = models.DateTimeField()
    # Start of the latest period whose free credits were granted: lets every read and spend
    # tell without a query whether the current period's grant is still due.
    free_period_start = models.DateTimeField(null=True, blank=True)
    # Cached balance. Only billing.services.ledger changes these, under the account's row lock,
    # and check_ledger proves they equal what the grants and holds say.
    available_credits = models.BigIntegerField(default=0)
    held_credits = models.BigIntegerField(default=0)
    # Quotas (billing_spend_quota counts them under the row lock, in the spend's own statement).
    # Operators' overrides of the settings RATE_LIMIT_ACCOUNT_PER_MINUTE, RATE_LIMIT_ACCOUNT_BURST
    # and DAILY_CAP_CREDITS; empty: the setting; 0 switches the limit off. No check constraints:
    # every one is paid on each balance write (the form's validators refuse negative values).
    rate_limit_per_minute = models.IntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Spends a minute; empty: the setting."
    )
    rate_limit_burst = models.IntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Spends at once; empty: the setting."
    )
    daily_cap_credits = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Credits a UTC day; empty: the setting."
    )
    # The token bucket (tokens left at rate_checked_at) and the credits spent on day_started (UTC).
    rate_tokens = models.FloatField(null=True, blank=True, editable=False)
    rate_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    day_spent = models.BigIntegerField(default=0, db_default=0, editable=False)
    day_started = models.DateField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["public_id"], name="account_public_id_unique"),
            models.CheckConstraint(condition=Q(available_credits__gte=0), name="account_available_nonnegative"),
            models.CheckConstraint(condition=Q(held_credits__gte=0), name="account_held_nonnegative"),
            models.CheckConstraint(
                condition=Q(period_anchor_day__gte=1) & Q(period_anchor_day__lte=28),
                name="account_anchor_day_range",
            ),
            models.CheckConstraint(condition=one_of("status", ["active", "suspended"]), name="account_status_valid"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_suspended(self) -> bool:
        return self.status == self.Status.SUSPENDED


class AccountQuota(Account):
    """An account seen for its quotas alone: the admin page where operators override the spend
    limits of one account (accounts/admin.py), apart from the console's audited account page."""

    class Meta:
        proxy = True
        verbose_name = "account quota"


class ServiceKey(models.Model):
    """A key the generation service uses to act on any account. Only its hash is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="First characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UserToken(models.Model):
    """A personal API token of an end user, reaching only /me routes. Only its hash is stored."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.prefix}…)"
