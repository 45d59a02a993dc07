"""Emails are attempted until they are sent or have failed five times: beat's email_retry_due
queues those due an attempt, whether their queueing at the fan-out was lost, their task met the
database down, their attempt never finished, or the mail server refused them (with backoff)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import OperationalError

from notifications.models import EmailDelivery, Event
from notifications.schedules import SCHEDULES
from notifications.services.outbox import outbox_sweep
from notifications.tasks import email_retry_due, send_email
from tests.notifications.test_emails_and_preferences import cross_below
from tests.private_servers import free_port
from tests.test_database_outage import database_down

pytestmark = pytest.mark.django_db

NOW = datetime(2031, 7, 1, 9, 30, tzinfo=UTC)


def fanned_out_email(account, django_capture_on_commit_callbacks) -> EmailDelivery:  # type: ignore[no-untyped-def]
    """balance.low fanned out by the outbox sweep, its queueing at commit lost (as when the broker
    is down then: the robust on_commit logs the error and moves on)."""
    cross_below(account)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        outbox_sweep()
    assert queued, "the fan-out queues its email at commit"
    (email,) = EmailDelivery.objects.filter(event__account=account)
    assert (email.status, email.attempts) == ("pending", 0)
    return email


def test_the_retry_sweep_is_installed_in_beat_every_30_seconds():
    from django_celery_beat.models import PeriodicTask

    (schedule,) = [s for s in SCHEDULES if s.task == email_retry_due.name]
    installed = PeriodicTask.objects.get(name=schedule.name)
    assert (installed.task, installed.interval.every, installed.interval.period) == (
        email_retry_due.name,
        30,
        "seconds",
    )


def test_an_email_whose_queueing_was_lost_is_sent_by_the_retry_sweep_once(
    buyer, eager_tasks, django_capture_on_commit_callbacks
):
    _, account = buyer
    email = fanned_out_email(account, django_capture_on_commit_callbacks)
    assert not mail.outbox

    assert email_retry_due() == 1
    (message,) = mail.outbox
    assert message.to == [account.user.email] and message.subject == "Your credits are running low"
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 1)

    send_email(email.pk)  # the lost task delivered late after all
    assert email_retry_due() == 0
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_an_email_whose_task_met_the_database_down_is_sent_once_it_is_back(buyer, eager_tasks):
    _, account = buyer
    cross_below(account)
    email = EmailDelivery.objects.create(event=Event.objects.get(account=account), to=account.user.email)
    with database_down(), pytest.raises(OperationalError):
        send_email(email.pk)  # the task fails before it can record anything
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("pending", 0)

    assert email_retry_due() == 1
    assert len(mail.outbox) == 1
    assert EmailDelivery.objects.get(pk=email.pk).status == "sent"


class WorkerKilledMidSend(BaseEmailBackend):
    """The worker process ends while the message is being sent: nothing after it runs."""

    def send_messages(self, email_messages):  # type: ignore[no-untyped-def]
        raise SystemExit("worker killed")


def test_an_attempt_that_never_finished_is_retried_once_its_lease_is_over(
    buyer, settings, eager_tasks, django_capture_on_commit_callbacks
):
    _, account = buyer
    with time_machine.travel(NOW, tick=False) as clock:
        email = fanned_out_email(account, django_capture_on_commit_callbacks)
        settings.EMAIL_BACKEND = "tests.notifications.test_email_retries.WorkerKilledMidSend"
        with pytest.raises(SystemExit):
            send_email(email.pk)
        email.refresh_from_db()
        assert (email.status, email.attempts, email.next_attempt_at) == ("pending", 1, NOW + timedelta(minutes=10))

        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
        clock.move_to(NOW + timedelta(minutes=9, seconds=59))
        assert email_retry_due() == 0  # the attempt may still be under way
        clock.move_to(NOW + timedelta(minutes=10))
        assert email_retry_due() == 1
    assert len(mail.outbox) == 1
    assert EmailDelivery.objects.get(pk=email.pk).status == "sent"


def test_a_mail_server_down_is_retried_with_backoff_and_the_email_failed_after_five_attempts(
    buyer, settings, eager_tasks, django_capture_on_commit_callbacks
):
    _, account = buyer
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    with time_machine.travel(NOW, tick=False) as clock:
        email = fanned_out_email(account, django_capture_on_commit_callbacks)
        attempted_at = NOW
        for attempt, backoff in enumerate([1, 2, 4, 8], start=1):
            assert email_retry_due() == 1
            email.refresh_from_db()
            assert (email.status, email.attempts) == ("pending", attempt)
            assert email.next_attempt_at == attempted_at + timedelta(minutes=backoff)
            assert "ConnectionRefusedError" in email.error
            send_email(email.pk)  # a second task for it (the sweep's, say) waits for the backoff too
            clock.move_to(email.next_attempt_at - timedelta(seconds=1))
            assert email_retry_due() == 0
            attempted_at = email.next_attempt_at
            clock.move_to(attempted_at)
        assert email_retry_due() == 1
        email.refresh_from_db()
        assert (email.status, email.attempts) == ("failed", 5) and "ConnectionRefusedError" in email.error
        clock.move_to(NOW + timedelta(days=1))
        assert email_retry_due() == 0
    assert not mail.outbox
