"""A delivery's POST against real loopback servers that misbehave: a host name that resolves to a
public address for the check and to 127.0.0.1 for the connection, an answer sent a byte at a
time, an answer far too large to read, and an operator's resend while an attempt is under way."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from billing.services.ledger import debit_create
from notifications.models import Event, WebhookAttempt, WebhookDelivery
from notifications.services.outbox import outbox_sweep
from notifications.services.webhooks import delivery_attempt, delivery_resend, endpoint_create
from tests.billing.factories import STAFF, give, make_account
from tests.notifications.receiver import webhook_receiver

pytestmark = pytest.mark.django_db

START = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
PUBLIC = "93.184.216.34"


def delivery_to(url: str) -> WebhookDelivery:
    """Register `url` and raise one event for it: its delivery, due now."""
    endpoint, _ = endpoint_create(url=url)
    account = make_account(now=START)
    give(account, 10, now=START)
    debit_create(account=account, credits=1, actor=STAFF, reference="gen", now=START)
    outbox_sweep(now=START)
    event = Event.objects.get(account=account, type="balance.low")
    return WebhookDelivery.objects.get(event=event, endpoint=endpoint)


def attempt_to(url: str) -> WebhookAttempt:
    """The first attempt of a delivery to `url`."""
    attempt = delivery_attempt(delivery_id=delivery_to(url).pk, now=START)
    assert attempt is not None
    return attempt


@contextmanager
def server(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A loopback HTTP server whose POST handler is `answer`; yields its /hooks URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                answer(self)
            except OSError:
                pass  # the worker hung up, as it should

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_a_name_rebound_to_loopback_after_the_check_gets_nothing(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_HTTP = True  # the loopback receiver speaks plain HTTP
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    real_getaddrinfo = socket.getaddrinfo
    # A record with a zero TTL: public for the check at registration, 127.0.0.1 from then on. The
    # attempt looks the name up once, for its connection, which checks what it found.
    answers = [PUBLIC]
    given: list[str] = []

    def rebinding(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.example.com":
            return real_getaddrinfo(host, *args, **kwargs)
        given.append(answers.pop(0) if answers else "127.0.0.1")
        return real_getaddrinfo(given[-1], *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        attempt = attempt_to(f"http://rebind.example.com:{port}/hooks")

    assert receiver.received == []
    assert given == [PUBLIC, "127.0.0.1"]  # registration, the attempt's connection
    assert attempt.status_code is None and not attempt.succeeded
    assert attempt.error == "not sent: The URL's host is a private or reserved address (127.0.0.1)."


def test_the_connection_goes_to_the_address_checked_and_keeps_the_host_name(loopback_webhooks, monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def named(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real_getaddrinfo("127.0.0.1" if host == "hooks.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", named)
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/")[0]
        attempt = attempt_to(f"http://hooks.example.com:{port}/hooks")
    assert attempt.succeeded
    (got,) = receiver.received
    assert got.headers["Host"] == f"hooks.example.com:{port}"


def trickle(head: bytes, body_bytes: int, every_seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer whose status line and headers come at once (`head`), then one body byte at a
    time: never silent long enough for a read timeout."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(head)
        handler.wfile.flush()
        for _ in range(body_bytes):
            time.sleep(every_seconds)
            handler.wfile.write(b"x")
            handler.wfile.flush()

    return answer


def test_an_answer_sent_a_byte_at_a_time_ends_the_attempt_at_its_deadline(loopback_webhooks):
    loopback_webhooks.WEBHOOK_TIMEOUT_SECONDS = 1
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1000\r\n\r\n"
    with server(trickle(head, body_bytes=40, every_seconds=0.1)) as url:
        started = time.monotonic()
        attempt = attempt_to(url)
        took = time.monotonic() - started
    assert took < 2.5, f"the attempt took {took:.1f} s with a 1 s deadline"
    assert attempt.status_code == 500 and attempt.error == "(no complete answer within the deadline)"


def test_headers_sent_a_byte_at_a_time_end_the_attempt_at_its_deadline(loopback_webhooks):
    loopback_webhooks.WEBHOOK_TIMEOUT_SECONDS = 1

    def slow_headers(handler: BaseHTTPRequestHandler) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"y" * 100:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.1)

    with server(slow_headers) as url:
        started = time.monotonic()
        attempt = attempt_to(url)
        took = time.monotonic() - started
    assert took < 2.5, f"the attempt took {took:.1f} s with a 1 s deadline"
    assert not attempt.succeeded and attempt.error == "Timeout: no complete answer within 1 s"


def test_a_2xx_answer_is_not_read_past_its_status(loopback_webhooks):
    loopback_webhooks.WEBHOOK_TIMEOUT_SECONDS = 1
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    with server(trickle(head, body_bytes=40, every_seconds=0.1)) as url:
        started = time.monotonic()
        attempt = attempt_to(url)
        took = time.monotonic() - started
    assert attempt.succeeded and attempt.status_code == 200 and took < 1


def test_only_the_start_of_a_huge_failed_answer_is_read(loopback_webhooks):
    size = 256 * 1024 * 1024
    sent = [0]

    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(f"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {size}\r\n\r\n".encode())
        block = b"z" * (1024 * 1024)
        while sent[0] < size:
            handler.wfile.write(block)
            sent[0] += len(block)

    with server(huge) as url:
        attempt = attempt_to(url)
    assert attempt.status_code == 500 and attempt.error == "z" * 500
    assert sent[0] < 16 * 1024 * 1024, f"the receiver got {sent[0]} bytes of its answer out"


@pytest.mark.django_db(transaction=True)
def test_a_resend_while_an_attempt_is_under_way_does_not_send_a_second_beside_it(loopback_webhooks):
    posts: list[str] = []
    during: list[WebhookAttempt | None] = []
    deliveries: list[WebhookDelivery] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        posts.append(handler.headers["Webhook-Id"])
        if len(posts) == 1:  # the first attempt waits for this answer: an operator resends now
            try:
                delivery_resend(delivery=deliveries[0], now=START)
                during.append(delivery_attempt(delivery_id=deliveries[0].pk, now=START))
            finally:
                connection.close()  # this server thread's own database connection
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with server(answer) as url:
        deliveries.append(delivery_to(url))
        first = delivery_attempt(delivery_id=deliveries[0].pk, now=START)
    assert first is not None and first.succeeded
    assert during == [None] and len(posts) == 1
    delivery = WebhookDelivery.objects.get(pk=deliveries[0].pk)
    assert (delivery.status, delivery.attempts, delivery.leased_until) == ("succeeded", 1, None)


@pytest.mark.django_db(transaction=True)
def test_a_resend_during_an_attempt_that_fails_leaves_the_delivery_due_in_a_fresh_window(loopback_webhooks):
    deliveries: list[WebhookDelivery] = []
    resent_at = START + timedelta(hours=80)  # the first window (72 hours) is long gone

    def answer(handler: BaseHTTPRequestHandler) -> None:
        try:
            delivery_resend(delivery=deliveries[0], now=resent_at)  # an operator, meanwhile
        finally:
            connection.close()  # this server thread's own database connection
        handler.send_response(500)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with server(answer) as url:
        deliveries.append(delivery_to(url))
        WebhookDelivery.objects.filter(pk=deliveries[0].pk).update(attempts=10)
        failed = delivery_attempt(delivery_id=deliveries[0].pk, now=resent_at)
    assert failed is not None and failed.status_code == 500
    delivery = WebhookDelivery.objects.get(pk=deliveries[0].pk)
    assert (delivery.status, delivery.attempts, delivery.leased_until) == ("pending", 11, None)
    assert delivery.next_attempt_at == resent_at  # due at once, for the sweep
