"""The weekly admission invites the oldest waiting entries up to the quota, once per week even
when runs race; invitations are emailed through Django's email framework."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail

from tests.concurrency import run_concurrently
from waitlist.models import AdmissionWeek, Invitation, WaitlistEntry, WaitlistPolicy
from waitlist.services import entries_skip, monday_of, policy_get, waitlist_join, weekly_admission_run
from waitlist.tasks import admit_weekly

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday


def waiting(n: int, *, start: datetime = T0 - timedelta(days=30)) -> list[WaitlistEntry]:
    return [waitlist_join(email=f"p{i:04d}@example.com", now=start + timedelta(minutes=i))[0] for i in range(n)]


def set_quota(quota: int) -> None:
    WaitlistPolicy.objects.update_or_create(pk=1, defaults={"weekly_quota": quota})


def test_the_weeks_start_on_monday_midnight_utc():
    assert monday_of(T0) == datetime(2026, 3, 2, tzinfo=UTC)
    assert monday_of(datetime(2026, 3, 2, tzinfo=UTC)) == datetime(2026, 3, 2, tzinfo=UTC)
    assert monday_of(datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == datetime(2026, 2, 23, tzinfo=UTC)


@pytest.mark.django_db
def test_the_quota_is_seeded_from_the_setting():
    assert policy_get().weekly_quota == 1000


@pytest.mark.django_db
def test_the_oldest_waiting_entries_are_invited_up_to_the_quota():
    entries = waiting(5)
    set_quota(3)
    entries_skip(entry_ids=[entries[1].pk], by="ops")
    admission = weekly_admission_run(now=T0)
    invited = set(WaitlistEntry.objects.filter(status="invited").values_list("email", flat=True))
    assert invited == {entries[0].email, entries[2].email, entries[3].email}
    assert len(admission.invitation_ids) == 3
    assert Invitation.objects.filter(expires_at=T0 + timedelta(days=14)).count() == 3
    assert WaitlistEntry.objects.get(pk=entries[1].pk).status == "skipped"
    assert WaitlistEntry.objects.get(pk=entries[0].pk).decided_by == "weekly admission"


@pytest.mark.django_db
def test_a_second_run_in_the_same_week_tops_up_only_what_the_quota_leaves():
    waiting(10)
    set_quota(4)
    assert len(weekly_admission_run(now=T0).invitation_ids) == 4
    assert weekly_admission_run(now=T0 + timedelta(hours=1)).invitation_ids == []
    set_quota(6)  # an operator raises the quota mid-week
    assert len(weekly_admission_run(now=T0 + timedelta(hours=2)).invitation_ids) == 2
    assert AdmissionWeek.objects.get().admitted == 6
    # Next week, a new quota.
    assert len(weekly_admission_run(now=T0 + timedelta(days=7)).invitation_ids) == 4
    assert Invitation.objects.count() == 10


def race_two_runs(now: datetime) -> list[int]:
    """Two admission runs started together from two threads; how many each invited."""
    return sorted(run_concurrently(2, lambda i: len(weekly_admission_run(now=now).invitation_ids)))


@pytest.mark.django_db(transaction=True)
def test_two_racing_runs_admit_the_quota_exactly_once():
    waiting(120)
    set_quota(50)
    for round_ in range(3):  # three weeks, each raced by two runs
        now = T0 + timedelta(days=7 * round_)
        # The week's row exists already (an earlier run, or a retry), so inserting it serializes
        # nothing: only its row lock keeps the two runs apart.
        AdmissionWeek.objects.create(week_start=monday_of(now))
        expected = min(50, 120 - 50 * round_)
        assert race_two_runs(now) == [0, expected]
        assert AdmissionWeek.objects.get(week_start=monday_of(now)).admitted == expected
    assert WaitlistEntry.objects.filter(status="invited").count() == 120
    assert Invitation.objects.count() == 120  # one per entry (a second would break the one-to-one)


@pytest.mark.django_db
def test_the_task_emails_each_invitation_with_its_signup_link(
    eager_tasks, waitlist_on, django_capture_on_commit_callbacks
):
    waiting(2)
    set_quota(5)
    with django_capture_on_commit_callbacks(execute=True):
        assert admit_weekly.delay().get() == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["p0000@example.com", "p0001@example.com"]
    body = mail.outbox[0].body
    assert "http://127.0.0.1:8000/signup?invitation=" in body
    assert Invitation.objects.filter(emailed_at__isnull=False).count() == 2


@pytest.mark.django_db
def test_the_task_invites_nobody_while_the_waitlist_is_off(settings):
    settings.WAITLIST_ENABLED = False
    waiting(2)
    assert admit_weekly() == 0
    assert not Invitation.objects.exists()


@pytest.mark.django_db
def test_the_schedule_is_installed():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="waitlist.admit_weekly")
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "9", "1")
