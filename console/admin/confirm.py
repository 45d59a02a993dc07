"""The one flow of every operator action: a form (with a reason), then a confirmation page
summing up what will happen, then the action, carried out through a service that writes the
audit record.

The confirmation is signed (django.core.signing) over the user, the page and the submitted
values, and expires after CONFIRMATION_MAX_AGE seconds: a POST without a valid one (a forged
or replayed form) only shows the confirmation page again. The audit record keeps a hash of it
under a unique constraint, so a confirmation is carried out once, however often it is sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from config.errors import DomainError
from console.services import Operator

SALT = "console.confirm"
CONFIRMATION_MAX_AGE = 900
CONFIRMATION_FIELD = "confirmation"

# What an action does once confirmed: a message to show on the page it returns to, or a page
# of its own (a new key, shown once).
Perform = Callable[[dict[str, Any], str], "str | HttpResponse"]


@dataclass(frozen=True)
class ActionPage:
    title: str
    permission: str
    target: Any  # the object acted on, shown on the pages
    done_url: str
    perform: Perform
    summary: Callable[[dict[str, Any]], list[tuple[str, Any]]]
    warning: str = ""


def _payload(request: HttpRequest, form: forms.Form) -> dict[str, Any]:
    # Line ends as a browser sends them back from the confirmation's hidden copy of a textarea.
    submitted = {name: [v.replace("\r\n", "\n") for v in request.POST.getlist(name)] for name in form.fields}
    return {"user": request.user.pk, "path": request.path, "values": submitted}


def _confirmed(request: HttpRequest, form: forms.Form) -> str | None:
    """The hash of a valid confirmation of exactly these values, or None."""
    token = request.POST.get(CONFIRMATION_FIELD, "")
    if not token:
        return None
    try:
        signed = signing.loads(token, salt=SALT, max_age=CONFIRMATION_MAX_AGE)
    except signing.BadSignature:  # forged, or expired (SignatureExpired is one)
        return None
    if signed != _payload(request, form):
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def action_view(
    model_admin: admin.ModelAdmin, request: HttpRequest, page: ActionPage, form: forms.Form
) -> HttpResponse:
    """Render the form, the confirmation, or carry the action out, as the request says."""
    if not request.user.has_perm(page.permission):  # type: ignore[union-attr]
        raise PermissionDenied(f"Your role does not allow this action: {page.title}.")
    stage, token = "form", ""
    if request.method == "POST" and form.is_valid():
        confirmation = _confirmed(request, form)
        if confirmation is None:
            stage, token = "confirm", signing.dumps(_payload(request, form), salt=SALT)
        else:
            try:
                done = page.perform(form.cleaned_data, confirmation)
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                if isinstance(done, HttpResponse):
                    return done
                model_admin.message_user(request, done, messages.SUCCESS)
                return HttpResponseRedirect(page.done_url)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": page.title,
        "page": page,
        "form": form,
        "stage": stage,
        "summary": page.summary(form.cleaned_data) if stage == "confirm" else [],
        "confirmation": token,
        "opts": model_admin.model._meta,
        "original": page.target,
    }
    return TemplateResponse(request, "admin/console/action.html", context)


def operator_of(request: HttpRequest) -> Operator:
    return Operator.staff(request.user)  # type: ignore[arg-type]


class ActionUrlsMixin:
    """One confirmation page per action, at <object>/<action>/ of the model's admin."""

    actions_pages: dict[str, str] = {}  # noqa: RUF012 - url part -> view method name

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view  # type: ignore[attr-defined]
        meta = self.model._meta  # type: ignore[attr-defined]
        own = [
            path(
                f"<str:object_id>/{part}/", wrap(getattr(self, view)), name=f"{meta.app_label}_{meta.model_name}_{part}"
            )
            for part, view in self.actions_pages.items()
        ]
        return [*own, *super().get_urls()]  # type: ignore[misc]

    def _found(self, request: HttpRequest, object_id: str) -> Any:
        found = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if found is None:
            raise Http404("No such object.")
        return found


class MadeByServicesAdmin(ActionUrlsMixin, admin.ModelAdmin):
    """Rows made and ended only by their services and the action pages (each with a reason and
    an audit record): never added, edited or deleted here, which would leave no record."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
