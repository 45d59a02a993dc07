"""The waitlist: people waiting to sign up, the invitations that let them, the weekly quota."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class WaitlistEntry(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting"
        INVITED = "invited"
        # Passed over by an operator: the weekly admission leaves it; an operator may still admit it.
        SKIPPED = "skipped"

    # Stored lower-cased (waitlist.services.normalize_email), so one address has one entry.
    email = models.EmailField(max_length=254)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    joined_at = models.DateTimeField(default=timezone.now)
    # When and by whom it was invited or skipped ("weekly admission" or the operator's email).
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        verbose_name_plural = "waitlist entries"
        constraints = [
            models.UniqueConstraint(fields=["email"], name="waitlist_entry_email_unique"),
            models.CheckConstraint(
                condition=Q(status__in=["waiting", "invited", "skipped"]), name="waitlist_entry_status_valid"
            ),
        ]
        # The weekly admission reads the oldest waiting entries, in this order.
        indexes = [
            models.Index(fields=["joined_at", "id"], condition=Q(status="waiting"), name="waitlist_waiting_oldest")
        ]
        # The admin's admit, skip and remove, and emailing an invitation again. No role has it:
        # superusers, or whoever an administrator gives it to.
        permissions = [("decide_waitlistentry", "Admit, skip and remove waitlist entries")]

    def __str__(self) -> str:
        return self.email


class Invitation(models.Model):
    """Lets one signup through while the waitlist is on. Its token is its id signed with the
    secret key (waitlist.services.invitation_token): nothing secret is stored, and an email can
    be sent again from the row."""

    # Removing an entry withdraws its invitation with it.
    entry = models.OneToOneField(WaitlistEntry, on_delete=models.CASCADE, related_name="invitation")
    email = models.EmailField(max_length=254)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    emailed_at = models.DateTimeField(null=True, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"invitation for {self.email}"


class AdmissionWeek(models.Model):
    """How many entries the weekly admission invited in one week (from Monday 00:00 UTC). Its
    row lock serializes admission runs, so racing runs invite the quota once between them."""

    week_start = models.DateTimeField(unique=True)
    admitted = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"week of {self.week_start:%Y-%m-%d}: {self.admitted} invited"


class WaitlistPolicy(models.Model):
    """The admin-editable row (id 1), seeded from WAITLIST_WEEKLY_QUOTA."""

    weekly_quota = models.PositiveIntegerField(help_text="Entries the weekly admission invites at most each week.")

    class Meta:
        verbose_name_plural = "waitlist policy"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="waitlist_policy_single_row")]

    def __str__(self) -> str:
        return f"{self.weekly_quota} a week"
