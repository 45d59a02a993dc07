"""A batch of debits: billing_debit_batch makes or refuses each item on its own, in one
transaction and one call (the service behind POST /api/v1/debits/batch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from billing.errors import BillingError, InvalidAmount
from billing.models import new_debit_id
from billing.quotas import quota_settings
from billing.services.ledger import Actor, check_amount, json_param, spend_refusal


@dataclass(frozen=True)
class BatchDebit:
    """One debit of a batch: the account by public id, and what debit_create takes."""

    account: str
    credits: int
    reference: str = ""
    operation: str = ""
    metadata: dict[str, Any] | None = None


@dataclass
class BatchOutcome:
    """A batch item's debit (its body, as the API shows it), or the refusal that stopped it."""

    body: dict[str, Any] | None = None
    error: BillingError | None = None


def debits_create_batch(*, items: list[BatchDebit], actor: Actor, now: datetime | None = None) -> list[BatchOutcome]:
    """Many debits in one transaction (billing_debit_batch); each is made or refused on its own,
    in the given order."""
    outcomes = [BatchOutcome() for _ in items]
    sent: list[BatchOutcome] = []
    rows: list[dict[str, Any]] = []
    for item, result in zip(items, outcomes, strict=True):
        try:
            check_amount(item.credits)
        except InvalidAmount as exc:
            result.error = exc
            continue
        sent.append(result)
        rows.append(
            {
                "account": item.account,
                "credits": item.credits,
                "operation": item.operation,
                "reference": item.reference,
                "metadata": item.metadata or {},
                "public_id": new_debit_id(),
            }
        )
    if not rows:
        return outcomes
    statement = (
        "SELECT n, outcome, credits, available, body, retry_after FROM billing_debit_batch(%s, %s, %s, %s, %s, %s, %s)"
    )
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(statement, [json_param(rows), now or timezone.now(), actor.type, actor.id, *quota_settings()])
        answered = cursor.fetchall()
    for place, (result, row, (n, outcome, credits, available, body, retry_after)) in enumerate(
        zip(sent, rows, answered, strict=True)
    ):
        assert n == place + 1, "billing_debit_batch answers its items in order"
        result.error = spend_refusal(outcome, row["operation"], credits, available, retry_after)
        result.body = body  # json, loaded by psycopg
    return outcomes
