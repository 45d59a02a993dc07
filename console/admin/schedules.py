"""Beat's periodic tasks in the admin: django-celery-beat's own admin, whose bulk actions
(enable, disable, toggle, run now) it offers to anyone who may view the list; here each needs
django_celery_beat.change_periodictask, as editing a task does. Its schedules' admins (crontab,
interval, solar, clocked) check Django's add, change and delete permissions already."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

BeatAction = Callable[[Any, HttpRequest, QuerySet[PeriodicTask]], Any]


def _needs_change_permission(action: BeatAction) -> BeatAction:
    """The library's action as it is, offered only to those who may change periodic tasks."""

    @admin.action(description=action.short_description, permissions=["change"])  # type: ignore[attr-defined]
    def guarded(model_admin: Any, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> Any:
        return action(model_admin, request, queryset)

    guarded.__name__ = action.__name__
    return guarded


class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    enable_tasks = _needs_change_permission(beat_admin.PeriodicTaskAdmin.enable_tasks)
    disable_tasks = _needs_change_permission(beat_admin.PeriodicTaskAdmin.disable_tasks)
    toggle_tasks = _needs_change_permission(beat_admin.PeriodicTaskAdmin.toggle_tasks)
    run_tasks = _needs_change_permission(beat_admin.PeriodicTaskAdmin.run_tasks)


# Importing beat_admin above registered the library's admin first: replace it.
admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
