"""The waitlist page: join with an email, and a clear answer for an email already waiting or
already invited. Parse with a form, call one service, render."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.models import User

from .forms import JoinForm
from .models import WaitlistEntry
from .services import normalize_email, waitlist_join
from .throttling import WaitlistThrottle


@require_http_methods(["GET", "POST"])
def waitlist_page(request: HttpRequest) -> HttpResponse:
    form = JoinForm(request.POST if request.method == "POST" else None)
    context: dict[str, object] = {"form": form, "by_invitation": settings.WAITLIST_ENABLED}
    if not form.is_bound:
        return render(request, "waitlist/join.html", context)
    throttle = WaitlistThrottle()
    if not throttle.allow_request(request, None):
        context["too_many"] = int(throttle.wait())
        return render(request, "waitlist/join.html", context, status=429)
    if not form.is_valid():
        return render(request, "waitlist/join.html", context, status=400)
    email = form.cleaned_data["email"]
    if User.objects.filter(email=normalize_email(email)).exists():
        context["answer"] = "registered"
    else:
        entry, created = waitlist_join(email=email)
        context["entry"] = entry
        context["answer"] = "joined" if created else _answer_for(entry)
        context["now"] = timezone.now()
    return render(request, "waitlist/join.html", context)


def _answer_for(entry: WaitlistEntry) -> str:
    return "invited" if entry.status == WaitlistEntry.Status.INVITED else "waiting"
