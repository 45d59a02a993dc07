"""billing's models, by subdomain: credits and their movements (ledger), purchases and Stripe."""

from .ledger import (
    LEDGER_KINDS,
    ActorType,
    BillingPolicy,
    Debit,
    Grant,
    Hold,
    IdempotencyKey,
    JobChunk,
    JobRun,
    LedgerEntry,
    Operation,
    new_debit_id,
    new_hold_id,
)
from .purchases import (
    CreditPack,
    Purchase,
    PurchaseRefund,
    StripeCustomer,
    StripeEvent,
    new_purchase_id,
    new_purchase_refund_id,
)

__all__ = [
    "LEDGER_KINDS",
    "ActorType",
    "BillingPolicy",
    "CreditPack",
    "Debit",
    "Grant",
    "Hold",
    "IdempotencyKey",
    "JobChunk",
    "JobRun",
    "LedgerEntry",
    "Operation",
    "Purchase",
    "PurchaseRefund",
    "StripeCustomer",
    "StripeEvent",
    "new_debit_id",
    "new_hold_id",
    "new_purchase_id",
    "new_purchase_refund_id",
]
