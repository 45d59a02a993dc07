"""Celery tasks: each takes ids or nothing, calls one service, and retries on its own."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

from billing.idempotency import idempotency_keys_purge
from billing.services.ledger import grants_expire_due, holds_expire_due

logger = logging.getLogger(__name__)

RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 5}


@shared_task(name="billing.release_expired_holds", **RETRY)
def release_expired_holds() -> int:
    settled = holds_expire_due()
    logger.info("released %d expired holds", settled)
    return settled


@shared_task(name="billing.expire_grants", **RETRY)
def expire_grants() -> int:
    expired = grants_expire_due()
    logger.info("expired %d lapsed grants", expired)
    return expired


@shared_task(name="billing.purge_idempotency_keys", **RETRY)
def purge_idempotency_keys() -> int:
    return idempotency_keys_purge()
