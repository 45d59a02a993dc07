"""Service routes of the spend API: parse, call one service, render."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import ServicePrincipal, principal_scope
from accounts.models import Account
from accounts.permissions import IsService
from billing.errors import AccountNotFound, UnknownOperation
from billing.idempotency import (
    KeyTaken,
    fingerprint,
    keys_store_many,
    keys_stored,
    refuse,
    replay,
    request_key,
    stored_refusal,
)
from billing.models import ActorType, Hold, Operation
from billing.quotas import with_quota_headers
from billing.schema import (
    BALANCE_DOC,
    BATCH_DOC,
    BATCH_ERRORS,
    CAPTURE_DOC,
    DEBIT_DOC,
    HOLD_DOC,
    HOLD_READ_DOC,
    HOLD_SETTLE_ERRORS,
    LEDGER_DOC,
    LEDGER_ERRORS,
    LEDGER_PARAMETERS,
    QUOTAS_DOC,
    RATE_LIMIT_HEADERS,
    REFUND_DOC,
    REFUND_ERRORS,
    RELEASE_DOC,
    SERVICE_READ_ERRORS,
    SPEND_ERRORS,
    credit_moving_parameters,
)
from billing.selectors import balance_json, hold_json, ledger_page
from billing.serializers import (
    BalanceOut,
    CaptureRequest,
    DebitBatchItem,
    DebitBatchOut,
    DebitBatchRequest,
    DebitOut,
    DebitRequest,
    EmptyRequest,
    HoldOut,
    HoldRequest,
    LedgerPageOut,
    LedgerQuery,
    batch_item_fast,
    capture_request_fast,
    debit_request_fast,
    encode_cursor,
    hold_request_fast,
)
from billing.services.batch import BatchDebit, debits_create_batch
from billing.services.ledger import (
    KEY_TAKEN,
    REPLAY,
    Actor,
    KeyRecord,
    Moved,
    account_settle,
    debit_refund_recorded,
    debit_spend,
    hold_capture_recorded,
    hold_release_recorded,
    hold_spend,
)
from config.converters import PublicIdConverter
from config.errors import ApiError, domain_error_response, error_body, validation_body
from config.lean_dispatch import LeanAPIView


def actor_of(request: Request) -> Actor:
    principal = request.user
    assert isinstance(principal, ServicePrincipal)
    return Actor(ActorType.SERVICE, str(principal.key_id))


def get_or_404(queryset: Any, **lookup: Any) -> Any:
    found = queryset.filter(**lookup).first()
    if found is None:
        raise ApiError(404, "not_found", "No such object.")
    return found


def account_or_404(public_id: str) -> Account:
    return get_or_404(Account.objects.all(), public_id=public_id)


def parse(serializer_class: type, data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# The routes the generation service calls (service keys only), on DRF's dispatch minus its
# repeated work (config/lean_dispatch.py). No docstring: drf-spectacular would publish it as the
# description of every route below.
class ServiceView(LeanAPIView):
    permission_classes = [IsService]


class BalanceView(ServiceView):
    @extend_schema(responses={200: BalanceOut, **SERVICE_READ_ERRORS}, tags=["balance"], description=BALANCE_DOC)
    def get(self, request: Request, account_id: str) -> HttpResponse:
        now = timezone.now()
        body = balance_json(account_id, now)
        if body is None:  # unknown, or something to settle first
            account_settle(account=account_or_404(account_id), actor=Actor.system("balance_read"), now=now)
            body = balance_json(account_id, now)
            assert body is not None, "a settled account's balance reads"
        return rendered(request, body, status.HTTP_200_OK)


def rendered(request: Request, body: str, status_code: int) -> HttpResponse:
    """A body PostgreSQL rendered as JSON, sent as it is; parsed and rendered again by DRF only
    when the client asked for another rendering (the browsable API, `indent=`)."""
    if request.accepted_media_type != JSONRenderer.media_type:
        return Response(json.loads(body), status=status_code)
    return HttpResponse(body, content_type=JSONRenderer.media_type, status=status_code)


def answered(request: Request, moved: Moved, record: KeyRecord, status_code: int) -> HttpResponse:
    """The answer to a movement whose function recorded the key: the body it made, the answer
    recorded before (a replay), a refusal recorded under the key (402, 403, 409), or a 400, 404
    or 429 that records nothing, so that a corrected or later retry may use the key. A spend's
    answers carry the account's RateLimit-* headers (billing/quotas.py)."""
    if moved.outcome in (REPLAY, KEY_TAKEN):
        return replay(record.scope, record.key, record.request_hash)
    if moved.refusal is None:
        assert moved.text is not None, moved.outcome
        return with_quota_headers(rendered(request, moved.text, status_code), moved.rate, None)
    if not stored_refusal(moved.refusal):
        # A debit or a hold meets a recorded key only when it records its own, at the end: one
        # refused before that (an operation since deactivated) is a replay all the same.
        if keys_stored(record.scope, [record.key]):
            return replay(record.scope, record.key, record.request_hash)
        return with_quota_headers(domain_error_response(moved.refusal), moved.rate, moved.refusal)
    # The call committed what it settled; the refusal is recorded on its own.
    return refuse(record.scope, record.key, record.request_hash, moved.refusal)


def key_record(request: Request) -> KeyRecord:
    return KeyRecord(*request_key(request))


class DebitCreateView(ServiceView):
    @extend_schema(
        request=DebitRequest,
        parameters=[*credit_moving_parameters(201), *RATE_LIMIT_HEADERS],
        responses={201: DebitOut, **SPEND_ERRORS},
        tags=["debits"],
        description=DEBIT_DOC + QUOTAS_DOC,
    )
    def post(self, request: Request, account_id: str) -> HttpResponse:
        record = key_record(request)
        data = debit_request_fast(request.data) or parse(DebitRequest, request.data)
        moved = debit_spend(
            account=account_id,
            credits=data.get("credits"),
            operation=data.get("operation", ""),
            reference=data["reference"],
            metadata=data.get("metadata"),
            actor=actor_of(request),
            now=timezone.now(),
            record=record,
        )
        return answered(request, moved, record, status.HTTP_201_CREATED)


@dataclass(frozen=True)
class _BatchItem:
    index: int
    key: str
    request_hash: str
    debit: BatchDebit


def _batch_result(key: str, status_code: int, body: Any, replayed: bool = False) -> dict[str, Any]:
    return {"idempotency_key": key, "status": status_code, "replayed": replayed, "body": body}


_PUBLIC_ID = re.compile(PublicIdConverter.regex)
_PLACEHOLDER = "acct_PLACEHOLDER"


@functools.cache
def _single_debit_path() -> str:
    """The single debit route's path with a placeholder account (reverse() once, not per item)."""
    return reverse("debit-create", kwargs={"account_id": _PLACEHOLDER})


def _batch_parse(raw_items: list[dict[str, Any]], results: list[dict[str, Any] | None]) -> list[_BatchItem]:
    """Validate each item on its own (a bad item is its own 400, stored nowhere)."""
    codes = {item.get("operation") for item in raw_items if isinstance(item.get("operation"), str)}
    prices = dict(Operation.objects.filter(code__in=codes, active=True).values_list("code", "credits"))
    seen: set[str] = set()
    parsed = []
    for index, raw in enumerate(raw_items):
        key = raw.get("idempotency_key")
        if isinstance(key, str):
            if key in seen:
                raise ApiError(400, "validation_error", f"debits[{index}]: idempotency_key is used twice in the batch.")
            seen.add(key)
        data = batch_item_fast(raw)
        if data is None:
            serializer = DebitBatchItem(data=raw)
            if not serializer.is_valid():
                body = validation_body(serializer.errors)
                results[index] = _batch_result(key if isinstance(key, str) else "", 400, body)
                continue
            data = serializer.validated_data
        if "operation" in data and data["operation"] not in prices:
            error = UnknownOperation(f"Unknown or inactive operation {data['operation']!r}.", field="operation")
            results[index] = _batch_result(data["idempotency_key"], 400, domain_error_response(error).data)
            continue
        if not _PUBLIC_ID.fullmatch(data["account_id"]):  # the single route would not exist
            results[index] = _batch_result(data["idempotency_key"], 404, domain_error_response(AccountNotFound()).data)
            continue
        path = _single_debit_path().replace(_PLACEHOLDER, data["account_id"])
        single_body = {k: v for k, v in raw.items() if k not in ("account_id", "idempotency_key")}
        parsed.append(
            _BatchItem(
                index=index,
                key=data["idempotency_key"],
                request_hash=fingerprint("POST", path, single_body),
                debit=BatchDebit(
                    account=data["account_id"],
                    credits=data["credits"] if "credits" in data else prices[data["operation"]],
                    operation=data.get("operation", ""),
                    reference=data["reference"],
                    metadata=data.get("metadata"),
                ),
            )
        )
    return parsed


class DebitBatchView(ServiceView):
    @extend_schema(
        request=DebitBatchRequest,
        responses={200: DebitBatchOut, **BATCH_ERRORS},
        tags=["debits"],
        description=BATCH_DOC,
    )
    def post(self, request: Request) -> Response:
        envelope = parse(DebitBatchRequest, request.data)
        results: list[dict[str, Any] | None] = [None] * len(envelope["debits"])
        items = _batch_parse(envelope["debits"], results)
        scope = principal_scope(request.user)
        actor = actor_of(request)
        # Each pass either commits or finds a key another request committed meanwhile, which the
        # next pass reads as stored: so the loop ends within len(items) + 1 passes.
        for _ in range(len(items) + 1):
            try:
                with transaction.atomic():
                    _batch_run(items, results, scope, actor)
                break
            except KeyTaken:
                continue
        else:
            raise RuntimeError("a batch found a key taken on every pass")
        return Response({"results": results})


def _batch_run(items: list[_BatchItem], results: list[dict[str, Any] | None], scope: str, actor: Actor) -> None:
    stored = keys_stored(scope, (item.key for item in items))
    todo = []
    for item in items:
        found = stored.get(item.key)
        if found is None:
            todo.append(item)
        elif found.request_hash != item.request_hash:
            reused = error_body("idempotency_key_reused", "This Idempotency-Key was used with a different request.")
            results[item.index] = _batch_result(item.key, 409, reused)
        else:
            results[item.index] = _batch_result(item.key, found.status_code or 0, found.response_body, replayed=True)
    done: list[tuple[_BatchItem, int, Any, bool]] = []  # item, status, body, recorded
    outcomes = debits_create_batch(items=[item.debit for item in todo], actor=actor, now=timezone.now())
    for item, outcome in zip(todo, outcomes, strict=True):
        if outcome.error is None:
            done.append((item, 201, outcome.body, True))
        else:
            error = outcome.error
            done.append((item, error.status_code, domain_error_response(error).data, stored_refusal(error)))
    rows = []
    for item, status_code, body, recorded in done:
        results[item.index] = _batch_result(item.key, status_code, body)
        if recorded:
            rows.append((item.key, item.request_hash, status_code, body))
    if not keys_store_many(scope, rows):
        raise KeyTaken()


class DebitRefundView(ServiceView):
    @extend_schema(
        request=EmptyRequest,
        parameters=credit_moving_parameters(200),
        responses={200: DebitOut, **REFUND_ERRORS},
        tags=["debits"],
        description=REFUND_DOC,
    )
    def post(self, request: Request, debit_id: str) -> HttpResponse:
        record = key_record(request)
        parse(EmptyRequest, request.data)
        moved = debit_refund_recorded(debit=debit_id, actor=actor_of(request), now=timezone.now(), record=record)
        return answered(request, moved, record, status.HTTP_200_OK)


class HoldCreateView(ServiceView):
    @extend_schema(
        request=HoldRequest,
        parameters=[*credit_moving_parameters(201), *RATE_LIMIT_HEADERS],
        responses={201: HoldOut, **SPEND_ERRORS},
        tags=["holds"],
        description=HOLD_DOC + QUOTAS_DOC,
    )
    def post(self, request: Request, account_id: str) -> HttpResponse:
        record = key_record(request)
        data = hold_request_fast(request.data) or parse(HoldRequest, request.data)
        moved = hold_spend(
            account=account_id,
            credits=data.get("credits"),
            operation=data.get("operation", ""),
            reference=data["reference"],
            expires_in=data["expires_in"],
            actor=actor_of(request),
            now=timezone.now(),
            record=record,
        )
        return answered(request, moved, record, status.HTTP_201_CREATED)


class HoldDetailView(ServiceView):
    @extend_schema(responses={200: HoldOut, **SERVICE_READ_ERRORS}, tags=["holds"], description=HOLD_READ_DOC)
    def get(self, request: Request, hold_id: str) -> Response:
        hold = get_or_404(Hold.objects.select_related("account"), public_id=hold_id)
        if hold.status == Hold.Status.PENDING:
            # Settled first, a hold past its expiry shows as released (`expired`), not a stale `pending`.
            account_settle(account=hold.account, actor=Actor.system("hold_timeouts"))
        return Response(hold_json(hold_id))


class HoldCaptureView(ServiceView):
    @extend_schema(
        request=CaptureRequest,
        parameters=credit_moving_parameters(200),
        responses={200: HoldOut, **HOLD_SETTLE_ERRORS},
        tags=["holds"],
        description=CAPTURE_DOC,
    )
    def post(self, request: Request, hold_id: str) -> HttpResponse:
        record = key_record(request)
        data = capture_request_fast(request.data) or parse(CaptureRequest, request.data)
        moved = hold_capture_recorded(
            hold=hold_id, credits=data.get("credits"), actor=actor_of(request), now=timezone.now(), record=record
        )
        return answered(request, moved, record, status.HTTP_200_OK)


class HoldReleaseView(ServiceView):
    @extend_schema(
        request=EmptyRequest,
        parameters=credit_moving_parameters(200),
        responses={200: HoldOut, **HOLD_SETTLE_ERRORS},
        tags=["holds"],
        description=RELEASE_DOC,
    )
    def post(self, request: Request, hold_id: str) -> HttpResponse:
        record = key_record(request)
        parse(EmptyRequest, request.data)
        moved = hold_release_recorded(hold=hold_id, actor=actor_of(request), now=timezone.now(), record=record)
        return answered(request, moved, record, status.HTTP_200_OK)


def ledger_response(request: Request, account: Account) -> Response:
    query = parse(LedgerQuery, request.query_params.dict())
    page, next_id = ledger_page(account=account, before_id=query.get("cursor"), limit=query["limit"])
    body = LedgerPageOut({"data": page, "next_cursor": encode_cursor(next_id) if next_id else None}).data
    return Response(body)


class LedgerView(ServiceView):
    @extend_schema(
        parameters=LEDGER_PARAMETERS,
        responses={200: LedgerPageOut, **LEDGER_ERRORS},
        tags=["ledger"],
        description=LEDGER_DOC,
    )
    def get(self, request: Request, account_id: str) -> Response:
        return ledger_response(request, account_or_404(account_id))
