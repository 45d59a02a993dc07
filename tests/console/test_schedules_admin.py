"""Beat's schedules in the admin: everyone with a role sees them; only a holder of
django_celery_beat.change_periodictask (superusers; no role has it) enables, disables, toggles or
runs them, and only the add, change and delete permissions edit them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from billing.models import JobRun
from billing.schedules import SCHEDULES, install
from console.roles import FINANCE, SUPPORT

from .conftest import logged_in, operator

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_celery_beat_periodictask_changelist"
ACTIONS = ["enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks"]


@pytest.fixture
def schedules() -> list[PeriodicTask]:
    """The refill (enabled, as installed) and the expiry (disabled here), both selected."""
    install(SCHEDULES)
    PeriodicTask.objects.filter(name="expire lapsed grants").update(enabled=False)
    return list(PeriodicTask.objects.filter(name__in=["refill free credits", "expire lapsed grants"]))


def states() -> list[tuple[str, bool]]:
    return list(PeriodicTask.objects.order_by("name").values_list("name", "enabled"))


@pytest.mark.parametrize("role", [SUPPORT, FINANCE, None])
@pytest.mark.parametrize("action", ACTIONS)
def test_an_operator_who_may_not_change_schedules_cannot_run_their_actions(role, action, schedules, eager_tasks):
    client = logged_in(operator("staff@example.com", role=role))
    before = states()
    client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [task.pk for task in schedules]})
    assert states() == before
    assert not JobRun.objects.exists()  # run_tasks ran nothing


@pytest.mark.parametrize("role", [SUPPORT, FINANCE])
def test_the_roles_see_the_schedules_but_are_offered_no_action(role, schedules):
    page = logged_in(operator("staff@example.com", role=role)).get(reverse(CHANGELIST))
    assert page.status_code == 200 and "refill free credits" in page.content.decode()
    assert 'name="action"' not in page.content.decode()


def test_a_holder_of_the_change_permission_toggles_and_runs_schedules(schedules, eager_tasks):
    user = operator("scheduler@example.com", role=SUPPORT)
    user.user_permissions.add(Permission.objects.get(codename="change_periodictask"))
    client = logged_in(user)
    selected = [task.pk for task in schedules]
    assert 'value="run_tasks"' in client.get(reverse(CHANGELIST)).content.decode()

    client.post(reverse(CHANGELIST), {"action": "toggle_tasks", "_selected_action": selected})
    assert dict(states())["refill free credits"] is False and dict(states())["expire lapsed grants"] is True

    refill = PeriodicTask.objects.get(name="refill free credits")
    client.post(reverse(CHANGELIST), {"action": "run_tasks", "_selected_action": [refill.pk]})
    assert JobRun.objects.get().job == JobRun.Job.REFILL


@pytest.mark.parametrize("role", [SUPPORT, FINANCE])
def test_the_roles_cannot_add_change_or_delete_a_schedule(role, schedules):
    client = logged_in(operator("staff@example.com", role=role))
    crontab = CrontabSchedule.objects.get(minute="5", hour="0")
    crontabs = list(CrontabSchedule.objects.values())
    intervals = list(IntervalSchedule.objects.values())
    form = {
        "minute": "0",
        "hour": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "*",
        "timezone": "UTC",
    }

    assert client.post(reverse("admin:django_celery_beat_crontabschedule_add"), form).status_code == 403
    change = reverse("admin:django_celery_beat_crontabschedule_change", args=[crontab.pk])
    assert client.post(change, form).status_code == 403
    delete = reverse("admin:django_celery_beat_crontabschedule_delete", args=[crontab.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    client.post(
        reverse("admin:django_celery_beat_intervalschedule_changelist"),
        {"action": "delete_selected", "post": "yes", "_selected_action": [i["id"] for i in intervals]},
    )
    refill = PeriodicTask.objects.get(name="refill free credits")
    task_change = reverse("admin:django_celery_beat_periodictask_change", args=[refill.pk])
    assert client.post(task_change, {"name": "renamed", "task": refill.task}).status_code == 403

    assert list(CrontabSchedule.objects.values()) == crontabs
    assert list(IntervalSchedule.objects.values()) == intervals
    assert PeriodicTask.objects.filter(name="refill free credits").exists()
