"""End-user HTML pages for billing: sign up (a new account gets its free credits), balance,
history, purchases, the buy button and the pages Stripe Checkout sends the buyer back to. Each
view parses its input with a form, calls one service or selector, and renders a template.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.forms import SignupForm
from accounts.models import Account, User
from billing.errors import BillingError, PaymentProviderError, PaymentsUnavailable
from billing.forms import BuyForm, HistoryQuery, PurchaseQuery
from billing.history import SOURCE_LABELS, history_rows
from billing.models import Purchase
from billing.selectors import balance_get, ledger_page, packs_active, purchases_of
from billing.serializers import encode_cursor
from billing.services import stripe_gateway
from billing.services.ledger import Actor, account_settle
from billing.services.purchases import purchase_start
from billing.signup import free_credits_wait, free_credits_withheld, user_signup
from config.site_errors import site_page
from waitlist.services import InvitationRefused

logger = logging.getLogger(__name__)

HISTORY_PAGE_SIZE = 20
RECENT_PURCHASES = 20
# A checkout still pending after this long was most likely left unpaid: its pages say what to do.
PENDING_GUIDANCE_AFTER = timedelta(minutes=30)
# What a buyer may read of a failure; the full Stripe message is on the purchase for operators.
PROVIDER_TROUBLE = "The payment provider could not be reached or refused the request. Nothing was charged; try again."
PAYMENTS_OFF = "Buying credits is not available yet."
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


def account_page(view: Any) -> Any:
    """login_required, then the user's account as the view's second argument. A login without
    an account (an operator made with createsuperuser) is sent to the admin if it is staff, and
    gets a page saying so otherwise, not a 500."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = cast(User, request.user)
        account = Account.objects.filter(user=user).first()
        if account is None:
            if user.is_staff:
                return redirect("admin:index")
            return message_page(request, "No credit account", "This login has no credit account.", 403)
        return view(request, account, *args, **kwargs)

    return wrapped


def message_page(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    return site_page(render(request, "web/message.html", {"title": title, "message": message}, status=status))


def home(request: HttpRequest) -> HttpResponse:
    return redirect("web-billing" if request.user.is_authenticated else "web-login")


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    invitation = request.GET.get("invitation", "")
    if request.method == "GET" and settings.WAITLIST_ENABLED and not invitation:
        return redirect("web-waitlist")  # signups are by invitation: the page says how to get one
    form = SignupForm(request.POST if request.method == "POST" else None, initial={"invitation": invitation})
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            user = user_signup(email=data["email"], password=data["password"], invitation=data["invitation"])
        except IntegrityError:
            # Two signups with one email raced past the form's check; the database kept one.
            form.add_error("email", "An account with this email already exists.")
        except InvitationRefused as refused:
            form.add_error(None, refused.message)
        else:
            login(request, user, backend=MODEL_BACKEND)
            return redirect("web-verify-email" if free_credits_wait(user) else settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@require_GET
@account_page
def billing_page(request: HttpRequest, account: Account) -> HttpResponse:
    query = HistoryQuery(request.GET)
    if not query.is_valid():
        return render_billing(
            request, account, before=None, status=400, history_error="That history link is not valid."
        )
    return render_billing(request, account, before=query.cleaned_data["before"])


@require_POST
@account_page
def buy(request: HttpRequest, account: Account) -> HttpResponse:
    """Start a Checkout Session for one pack and send the browser to Stripe (303: GET it)."""
    form = BuyForm(request.POST)
    if not form.is_valid():
        return render_billing(request, account, status=400, buy_error=" ".join(map(str, form.errors.get("pack") or [])))
    try:
        _, session = purchase_start(
            account=account, pack=form.cleaned_data["pack"], quantity=1, flow=Purchase.Flow.CHECKOUT
        )
    except PaymentProviderError as exc:
        logger.warning("checkout for %s failed: %s", account.public_id, exc.message)
        return render_billing(request, account, status=exc.status_code, buy_error=PROVIDER_TROUBLE)
    except PaymentsUnavailable as exc:  # the buyer is told in their words, not the server's configuration
        return render_billing(request, account, status=exc.status_code, buy_error=PAYMENTS_OFF)
    except BillingError as exc:  # account suspended
        return render_billing(request, account, status=exc.status_code, buy_error=exc.message)
    url = session.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        logger.warning("checkout session %s for %s came without a url", session.get("id"), account.public_id)
        return render_billing(request, account, status=502, buy_error=PROVIDER_TROUBLE)
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def render_billing(
    request: HttpRequest,
    account: Account,
    *,
    before: int | None = None,
    status: int = 200,
    buy_error: str = "",
    history_error: str = "",
) -> HttpResponse:
    now = timezone.now()
    # A new period's free credits are granted (and lapsed lots expired) on first read.
    account = account_settle(account=account, actor=Actor.system("balance_read"), now=now)
    balance = balance_get(account=account, now=now)
    entries, next_before = ledger_page(account=account, before_id=before, limit=HISTORY_PAGE_SIZE)
    context = {
        "account": account,
        "balance": balance,
        "lots": [{"grant": g, "label": SOURCE_LABELS.get(g.source, g.source)} for g in balance.grants],
        "history": history_rows(entries),
        "next_before": encode_cursor(next_before) if next_before else None,
        "paged": before is not None,
        "purchases": purchases_of(account=account, limit=RECENT_PURCHASES),
        "pending_since": now - PENDING_GUIDANCE_AFTER,
        "packs": list(packs_active()),
        "payments_enabled": stripe_gateway.payments_enabled(),
        "buy_error": buy_error,
        "history_error": history_error,
        "free_credits_withheld": free_credits_withheld(account),
    }
    return render(request, "billing/billing.html", context, status=status)


@require_GET
@account_page
def checkout_return(request: HttpRequest, account: Account, outcome: str) -> HttpResponse:
    """Where Checkout sends the buyer back (outcome "success" or "cancel"): the purchase's state."""
    query = PurchaseQuery(request.GET)
    if not query.is_valid():
        return message_page(request, "Link not valid", "This page needs a purchase id (pur_...).", 400)
    # Only the logged-in user's own purchase: anyone else's is as absent as a made-up id.
    purchase = (
        Purchase.objects.filter(public_id=query.cleaned_data["purchase"], account=account)
        .select_related("pack")
        .first()
    )
    if purchase is None:
        return message_page(request, "Purchase not found", "There is no such purchase on your account.", 404)
    context = {"purchase": purchase, "outcome": outcome, "pending_since": timezone.now() - PENDING_GUIDANCE_AFTER}
    return render(request, "billing/checkout_return.html", context)
