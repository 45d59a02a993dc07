"""Operators' actions: each goes through the service that owns the movement, and leaves an audit
record naming who did it, why, and with which amounts, in the same transaction as the change.

Stripe is called outside any transaction: a refund's intent and its audit record commit first
(purchase_refund_request), then Stripe is called (purchase_refund_execute).
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.ids import user_public_id
from accounts.models import Account, ServiceKey, User, UserToken
from accounts.services import (
    account_reactivate,
    account_suspend,
    service_key_create,
    service_key_revoke,
    user_token_revoke,
)
from billing.models import ActorType, Grant, Purchase, PurchaseRefund, StripeEvent
from billing.services.ledger import Actor, grant_clawback, grant_create, grant_void
from billing.services.purchases import purchase_refund_execute, purchase_refund_request
from billing.services.stripe_events import stripe_event_process
from config.errors import DomainError

from .models import AuditRecord

Action = AuditRecord.Action


class ConsoleError(DomainError):
    code = "console_error"


class ReasonRequired(ConsoleError):
    status_code = 400
    code = "validation_error"
    default_message = "A reason is required."

    def __init__(self) -> None:
        super().__init__(fields={"reason": ["A reason is required."]})


class GrantOverLimit(ConsoleError):
    status_code = 403
    code = "permission_denied"


class AlreadyCarriedOut(ConsoleError):
    status_code = 409
    code = "already_carried_out"
    default_message = "This confirmation was already carried out; nothing was done again."


@dataclass(frozen=True)
class Operator:
    """Who acts: a staff user in the admin, or a service key through the API."""

    actor_type: str
    label: str
    user: User | None = None
    key_id: int | None = None

    @classmethod
    def staff(cls, user: User) -> Operator:
        return cls(AuditRecord.ActorType.STAFF, user.email, user=user)

    @classmethod
    def service(cls, key_id: int, name: str = "") -> Operator:
        return cls(AuditRecord.ActorType.SERVICE, f"service key {key_id} {name}".strip(), key_id=key_id)

    @classmethod
    def command(cls, name: str) -> Operator:
        """Whoever ran `manage.py <name>`: the system user on this machine, as the shell knows them."""
        return cls(AuditRecord.ActorType.COMMAND, f"manage.py {name} by {getpass.getuser()}@{socket.gethostname()}")

    @property
    def ledger_actor(self) -> Actor:
        if self.user is not None:
            return Actor(ActorType.STAFF, str(self.user.pk))
        if self.key_id is None:
            return Actor.system(self.label[:64])
        return Actor(ActorType.SERVICE, str(self.key_id))

    def may(self, permission: str) -> bool:
        return self.user is not None and self.user.has_perm(permission)


def _audit(
    operator: Operator,
    action: str,
    *,
    target: str,
    reason: str,
    account: Account | None = None,
    credits: int | None = None,
    amount_cents: int | None = None,
    details: dict[str, Any] | None = None,
    confirmation: str | None = None,
) -> AuditRecord:
    """Record the action; a confirmation carried out before raises AlreadyCarriedOut, and the
    caller's transaction, with the change it made, rolls back."""
    try:
        with transaction.atomic():
            return AuditRecord.objects.create(
                actor_type=operator.actor_type,
                staff_user=operator.user,
                actor=operator.label[:255],
                action=action,
                account=account,
                target=target[:255],
                reason=reason,
                credits=credits,
                amount_cents=amount_cents,
                details=details or {},
                confirmation=confirmation,
            )
    except IntegrityError as exc:
        if confirmation and AuditRecord.objects.filter(confirmation=confirmation).exists():
            raise AlreadyCarriedOut() from exc
        raise


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ReasonRequired()
    return reason.strip()


def grant_target(grant: Grant) -> str:
    return f"grant {grant.pk}"


def credits_grant(
    *,
    operator: Operator,
    account: Account,
    credits: int,
    reason: str,
    expires_at: datetime | None = None,
    priority: int | None = None,
    confirmation: str | None = None,
) -> Grant:
    """An adjustment grant. Without `console.grant_credits_unlimited` (no role has it: superusers,
    or whoever an administrator gives it to), an operator grants at most
    SUPPORT_GRANT_LIMIT_CREDITS at once."""
    reason = _reason(reason)
    limit = settings.SUPPORT_GRANT_LIMIT_CREDITS
    if credits > limit and not operator.may("console.grant_credits_unlimited"):
        raise GrantOverLimit(
            f"Your role may grant at most {limit} credits at once; ask a superuser (or an operator allowed "
            f"to grant over the limit) to grant {credits}."
        )
    with transaction.atomic():
        grant = grant_create(
            account=account,
            source=Grant.Source.ADJUSTMENT,
            credits=credits,
            expires_at=expires_at,
            priority=priority,
            actor=operator.ledger_actor,
            reason=reason,
            reference=f"console:{operator.label}"[:255],
        )
        details = {
            "grant": grant.pk,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "priority": grant.priority,
        }
        _audit(
            operator,
            Action.GRANT,
            account=account,
            target=account.public_id,
            reason=reason,
            credits=credits,
            details=details,
            confirmation=confirmation,
        )
    return grant


def credits_clawback(
    *, operator: Operator, grant: Grant, credits: int, reason: str, confirmation: str | None = None
) -> int:
    """Take back up to `credits` of what is unspent on the grant; returns how many were taken."""
    reason = _reason(reason)
    with transaction.atomic():
        taken = grant_clawback(grant=grant, credits=credits, actor=operator.ledger_actor, reference=reason[:255])
        _audit(
            operator,
            Action.CLAWBACK,
            account=grant.account,
            target=grant_target(grant),
            reason=reason,
            credits=taken,
            details={"asked": credits, "taken": taken},
            confirmation=confirmation,
        )
    return taken


def grant_void_audited(*, operator: Operator, grant: Grant, reason: str, confirmation: str | None = None) -> int:
    """Cancel what is unspent on the grant; returns how many credits that was."""
    reason = _reason(reason)
    with transaction.atomic():
        voided = grant_void(grant=grant, actor=operator.ledger_actor, reason=reason[:255])
        _audit(
            operator,
            Action.VOID,
            account=grant.account,
            target=grant_target(grant),
            reason=reason,
            credits=voided,
            confirmation=confirmation,
        )
    return voided


def account_status_change(
    *, operator: Operator, account: Account, suspend: bool, reason: str, confirmation: str | None = None
) -> tuple[Account, bool]:
    """Suspend or reactivate; recorded when the status changed. Returns the account and whether
    it changed."""
    reason = _reason(reason)
    change = account_suspend if suspend else account_reactivate
    with transaction.atomic():
        account, changed = change(account_id=account.pk, reason=reason)
        if changed:
            _audit(
                operator,
                Action.SUSPEND if suspend else Action.REACTIVATE,
                account=account,
                target=account.public_id,
                reason=reason,
                confirmation=confirmation,
            )
    return account, changed


def purchase_refund_audited(
    *,
    operator: Operator,
    purchase: Purchase,
    reason: str,
    amount_cents: int | None = None,
    confirmation: str | None = None,
) -> PurchaseRefund:
    """Refund all that is left of the purchase (`amount_cents` None) or part of it: the refund
    and its audit record commit, then Stripe is called, then its answer is recorded."""
    reason = _reason(reason)
    with transaction.atomic():
        refund = purchase_refund_request(
            purchase=purchase, amount_cents=amount_cents, requested_by=operator.label, reason=reason
        )
        _audit(
            operator,
            Action.REFUND,
            account=purchase.account,
            target=purchase.public_id,
            reason=reason,
            amount_cents=refund.amount_cents,
            details={"refund": refund.public_id},
            confirmation=confirmation,
        )
    return purchase_refund_execute(refund=refund, actor=operator.ledger_actor)


def purchase_refund_resend(
    *, operator: Operator, refund: PurchaseRefund, reason: str, confirmation: str | None = None
) -> PurchaseRefund:
    """Send a refund whose answer was lost (still `requested`) to Stripe again, under the same
    idempotency key: Stripe refunds it at most once."""
    reason = _reason(reason)
    purchase = refund.purchase
    _audit(
        operator,
        Action.REFUND,
        account=purchase.account,
        target=purchase.public_id,
        reason=reason,
        amount_cents=refund.amount_cents,
        details={"refund": refund.public_id, "sent_again": True},
        confirmation=confirmation,
    )
    return purchase_refund_execute(refund=refund, actor=operator.ledger_actor)


def stripe_event_replay(*, operator: Operator, event: StripeEvent, reason: str, confirmation: str | None = None) -> str:
    """Process a failed (or never processed) event again; returns its status after."""
    reason = _reason(reason)
    account = event.purchase.account if event.purchase is not None else None
    _audit(
        operator,
        Action.REPLAY_EVENT,
        account=account,
        target=event.stripe_event_id,
        reason=reason,
        details={"status_before": event.status},
        confirmation=confirmation,
    )
    return stripe_event_process(event_pk=event.pk)


def service_key_revoke_audited(
    *, operator: Operator, key: ServiceKey, reason: str, confirmation: str | None = None
) -> bool:
    """Recorded first, then revoked: the revocation tells the shared cache at once, which must
    not happen before the database says so. False when the cache could not be told
    (service_key_revoke)."""
    reason = _reason(reason)
    _audit(
        operator,
        Action.REVOKE_KEY,
        target=f"service key {key.pk} {key.prefix}",
        reason=reason,
        details={"name": key.name},
        confirmation=confirmation,
    )
    return service_key_revoke(key=key)


def user_token_revoke_audited(
    *, operator: Operator, token: UserToken, reason: str, confirmation: str | None = None
) -> bool:
    """End a user's personal token; recorded, on the user's account, when it was still in force.
    Returns whether it was."""
    reason = _reason(reason)
    with transaction.atomic():
        revoked = user_token_revoke(token=token)
        if revoked:
            _audit(
                operator,
                Action.REVOKE_TOKEN,
                account=Account.objects.filter(user_id=token.user_id).first(),
                target=f"personal token {token.pk} {token.prefix}",
                reason=reason,
                details={"user": user_public_id(token.user_id)},
                confirmation=confirmation,
            )
    return revoked


def service_key_create_audited(
    *, operator: Operator, name: str, reason: str, confirmation: str | None = None
) -> tuple[ServiceKey, str]:
    """A new key; the raw key is returned once, to be shown once (only its hash is stored)."""
    reason = _reason(reason)
    with transaction.atomic():
        key, raw = service_key_create(name=name)
        _audit(
            operator,
            Action.CREATE_KEY,
            target=f"service key {key.pk} {key.prefix}",
            reason=reason,
            details={"name": name},
            confirmation=confirmation,
        )
    return key, raw
