"""Outbound webhooks: endpoints the generation service registers, and deliveries signed as Stripe
signs (`Webhook-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`), attempted
until the endpoint answers 2xx, with exponential backoff for up to WEBHOOK_RETRY_HOURS."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from notifications.errors import InvalidInput, NotFound
from notifications.models import EventType, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from notifications.services import webhook_transport

SIGNATURE_HEADER = "Webhook-Signature"
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 6 * 3600
# An attempt under way holds its delivery this long (leased_until), so it is never sent twice at
# once: twice the longest deadline of an attempt (WEBHOOK_TIMEOUT_SECONDS is at most 60).
ATTEMPT_LEASE_SECONDS = 120
MAX_ENDPOINTS = 20


def _bad_url(message: str) -> InvalidInput:
    return InvalidInput(message, field="url")


# --- Endpoints ------------------------------------------------------------------------------


def endpoint_url_check(url: str) -> None:
    """https:// (http:// only when WEBHOOK_ALLOW_HTTP), a host name, no credentials, and, unless
    WEBHOOK_ALLOW_PRIVATE_ADDRESSES, no host that is or resolves to a private, loopback,
    link-local or reserved address (webhook_transport.checked_addresses, which every connection
    of a delivery checks again)."""
    host = _url_form_check(url)
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        webhook_transport.checked_addresses(host)


def _url_form_check(url: str) -> str:
    """The URL's form, as endpoint_url_check says (no lookup); its host."""
    try:  # the parser refuses a malformed bracketed host ("[::1", "[zz]") or a port out of range
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - read for the parser's check
    except ValueError:
        raise _bad_url("The URL's host or port is not valid.") from None
    allowed = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed:
        raise _bad_url(f"The URL must start with {' or '.join(s + '://' for s in allowed)}.")
    if not host or parts.username or parts.password:
        raise _bad_url("The URL needs a host and must not carry a user name or password.")
    if parts.fragment:
        raise _bad_url("The URL must not have a #fragment.")
    return host


def endpoint_create(
    *, url: str, description: str = "", event_types: list[str] | None = None, created_by: str = ""
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned here once; only deliveries use it later)."""
    endpoint_url_check(url)
    unknown = sorted(set(event_types or []) - set(EventType.values))
    if unknown:
        raise InvalidInput(f"Unknown event types: {', '.join(unknown)}.", field="event_types")
    if WebhookEndpoint.objects.filter(deleted_at__isnull=True).count() >= MAX_ENDPOINTS:
        raise InvalidInput(f"At most {MAX_ENDPOINTS} endpoints; delete one first.", field="non_field_errors")
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint.objects.create(
        url=url,
        description=description,
        event_types=sorted(set(event_types or [])),
        secret=secret,
        created_by=created_by,
    )
    return endpoint, secret


def endpoint_delete(*, public_id: str, now: datetime | None = None) -> None:
    """Stop sending to the endpoint; its deliveries and their log stay for operators."""
    deleted = WebhookEndpoint.objects.filter(public_id=public_id, deleted_at__isnull=True).update(
        deleted_at=now or timezone.now()
    )
    if not deleted:
        raise NotFound("No such webhook endpoint.")


# --- Signing and delivering -----------------------------------------------------------------


def signature_header(*, secret: str, body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 30 s, 1 min, 2 min, ... doubling, at most 6 hours."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def _due(now: datetime) -> Q:
    """Pending, its next attempt due, and no attempt under way (or one past its lease)."""
    unleased = Q(leased_until__isnull=True) | Q(leased_until__lte=now)
    return Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now) & unleased


def _claim(delivery_id: int, now: datetime) -> bool:
    """Take the delivery for one attempt if it is due (a compare-and-set that leases it)."""
    return bool(
        WebhookDelivery.objects.filter(_due(now), pk=delivery_id).update(
            leased_until=now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)
        )
    )


def delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookAttempt | None:
    """POST the event to the endpoint once, if the delivery is due; log the attempt and set the
    next one. None when the delivery was not due (done, or another attempt holds it)."""
    now = now or timezone.now()
    if not _claim(delivery_id, now):
        return None
    delivery = WebhookDelivery.objects.select_related("event__account", "endpoint").get(pk=delivery_id)
    if delivery.endpoint.deleted_at is not None:
        _finish(delivery, now, WebhookDelivery.Status.FAILED, "the endpoint was deleted")
        return None
    body = json.dumps(delivery.event.payload(), separators=(",", ":")).encode()
    status_code, error, latency_ms = _post(delivery, body, now)
    succeeded = status_code is not None and 200 <= status_code < 300
    with transaction.atomic():
        attempt = WebhookAttempt.objects.create(
            delivery=delivery,
            attempted_at=now,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            succeeded=succeeded,
        )
        _after_attempt(delivery, now, succeeded, error or f"HTTP {status_code}")
    return attempt


def _post(delivery: WebhookDelivery, body: bytes, now: datetime) -> tuple[int | None, str, int]:
    """One POST within WEBHOOK_TIMEOUT_SECONDS in all (after the host's lookup): the status, the
    start of a failed answer or why nothing was answered, and the latency."""
    try:  # the form checked again (the settings may have changed); the connection checks the addresses
        _url_form_check(delivery.endpoint.url)
    except InvalidInput as refused:
        return None, f"not sent: {refused.message}", 0
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "credits-webhooks/1",
        "Webhook-Id": delivery.event.public_id,
        SIGNATURE_HEADER: signature_header(secret=delivery.endpoint.secret, body=body, timestamp=timestamp),
    }
    started = time.monotonic()
    try:
        answer = webhook_transport.post(
            delivery.endpoint.url, body=body, headers=headers, seconds=settings.WEBHOOK_TIMEOUT_SECONDS
        )
    except InvalidInput as refused:  # the connection's own check of the addresses
        return None, f"not sent: {refused.message}", _ms(started)
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000], _ms(started)
    return answer.status_code, answer.excerpt, _ms(started)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _after_attempt(delivery: WebhookDelivery, now: datetime, succeeded: bool, error: str) -> None:
    """Record the attempt's outcome on the delivery as it is now: an operator may have resent it
    while the attempt was under way (a fresh window, due at once), and a failed attempt then
    leaves it due, not waiting out a backoff or failed for the old window."""
    current = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
    attempts = current.attempts + 1
    if succeeded:
        _finish(current, now, WebhookDelivery.Status.SUCCEEDED, "", attempts)
        return
    if current.created_at != delivery.created_at:  # resent during the attempt
        next_at = current.next_attempt_at
    else:
        next_at = now + retry_delay(attempts)
        if next_at > current.created_at + timedelta(hours=settings.WEBHOOK_RETRY_HOURS):
            _finish(current, now, WebhookDelivery.Status.FAILED, error, attempts)
            return
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        attempts=attempts, next_attempt_at=next_at, last_error=error, leased_until=None
    )


def _finish(delivery: WebhookDelivery, now: datetime, status: str, error: str, attempts: int | None = None) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status,
        completed_at=now,
        last_error=error,
        attempts=delivery.attempts if attempts is None else attempts,
        leased_until=None,
    )


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or timezone.now()
    due = WebhookDelivery.objects.filter(_due(now))
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def delivery_resend(*, delivery: WebhookDelivery, now: datetime | None = None) -> None:
    """An operator's resend: the delivery is due again now, with a fresh retry window. An attempt
    under way keeps its lease: the resend is that one when it succeeds, and is attempted after it
    (the delivery left due) when it fails; never beside it."""
    now = now or timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now, created_at=now, completed_at=None
    )
    from notifications.tasks import deliver_webhook

    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk), robust=True)
