"""Operators' admit, skip and remove racing the weekly admission (or each other), with real
threads against PostgreSQL, each with its own connection. The admission is held, its entries
locked and their invitations written, until the operator's action is seen waiting on a lock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.concurrency import run_concurrently, wait_until_another_backend_waits_on_a_lock
from waitlist import services
from waitlist.models import Invitation, WaitlistEntry
from waitlist.services import entries_admit, entries_remove, entries_skip, waitlist_join, weekly_admission_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def waiting(n: int) -> list[WaitlistEntry]:
    return [
        waitlist_join(email=f"r{i:03d}@example.com", now=timezone.now() - timedelta(days=1, minutes=-i))[0]
        for i in range(n)
    ]


def race_with_held_invitations(invite: Callable[[], object], operator: Callable[[], object]) -> None:
    """`invite` runs until its invitations are written (its entries locked), then waits for
    `operator`, started only then, to queue behind its locks, and commits."""
    invited = threading.Event()
    original = services._invite

    def held_invite(*args, **kwargs):  # type: ignore[no-untyped-def]
        made = original(*args, **kwargs)
        if not invited.is_set():  # the first call is `invite`'s; an operator's admit goes on
            invited.set()
            wait_until_another_backend_waits_on_a_lock()
        return made

    def work(index: int) -> None:
        if index == 0:
            invite()
        else:
            assert invited.wait(10), "no invitation was written"
            operator()

    services._invite = held_invite  # type: ignore[assignment]
    try:
        run_concurrently(2, work)
    finally:
        services._invite = original  # type: ignore[assignment]


def test_removing_entries_the_weekly_admission_is_inviting_removes_them_and_their_invitations():
    entries = waiting(3)
    race_with_held_invitations(
        lambda: weekly_admission_run(), lambda: entries_remove(entry_ids=[e.pk for e in entries[:2]])
    )
    assert list(WaitlistEntry.objects.values_list("email", "status")) == [(entries[2].email, "invited")]
    assert list(Invitation.objects.values_list("email", flat=True)) == [entries[2].email]


def test_removing_an_entry_an_operator_is_admitting_removes_it_and_its_invitation():
    entry = waiting(1)[0]
    race_with_held_invitations(
        lambda: entries_admit(entry_ids=[entry.pk], by="ops"), lambda: entries_remove(entry_ids=[entry.pk])
    )
    assert not WaitlistEntry.objects.exists() and not Invitation.objects.exists()


def test_skipping_an_entry_the_weekly_admission_is_inviting_leaves_it_invited_once():
    entries = waiting(2)
    race_with_held_invitations(
        lambda: weekly_admission_run(), lambda: entries_skip(entry_ids=[entries[0].pk], by="ops")
    )
    assert set(WaitlistEntry.objects.values_list("status", flat=True)) == {"invited"}
    assert Invitation.objects.count() == 2


def test_admitting_by_hand_an_entry_the_weekly_admission_is_inviting_invites_it_once():
    entries = waiting(2)
    race_with_held_invitations(
        lambda: weekly_admission_run(), lambda: entries_admit(entry_ids=[entries[0].pk], by="ops")
    )
    assert set(WaitlistEntry.objects.values_list("status", "decided_by")) == {("invited", "weekly admission")}
    assert Invitation.objects.count() == 2
