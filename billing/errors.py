"""Business errors raised by the billing services; the API turns each into its documented code
(config.errors answers every DomainError)."""

from __future__ import annotations

from config.errors import DomainError


class BillingError(DomainError):
    code = "billing_error"


class InsufficientCredits(BillingError):
    status_code = 402
    code = "insufficient_credits"
    default_message = "The account does not have enough available credits."

    def __init__(self, *, available: int, requested: int) -> None:
        super().__init__(available=available, requested=requested)


class AccountNotFound(BillingError):
    """No account has the public id a caller named; like a validation error, nothing is recorded."""

    status_code = 404
    code = "not_found"
    default_message = "No such object."


class HoldNotFound(AccountNotFound):
    """No hold has the public id a caller named."""


class AccountSuspended(BillingError):
    status_code = 403
    code = "account_suspended"
    default_message = "The account is suspended."


class HoldNotPending(BillingError):
    status_code = 409
    code = "hold_not_pending"
    default_message = "The hold has already been settled."


class HoldExpired(BillingError):
    status_code = 409
    code = "hold_expired"
    default_message = "The hold expired before it was captured; its credits were released."


class DebitAlreadyRefunded(BillingError):
    status_code = 409
    code = "debit_already_refunded"
    default_message = "The debit has already been refunded."


class UnknownOperation(BillingError):
    status_code = 400
    code = "validation_error"
    field = "operation"
    default_message = "Unknown or inactive operation."


class PurchaseGrantNotVoidable(BillingError):
    status_code = 409
    code = "purchase_grant"
    default_message = (
        "A purchase's credits are not voided: claw them back, which is counted on the purchase, or refund it."
    )


class InvalidAmount(BillingError):
    status_code = 400
    code = "validation_error"
    field = "credits"
    default_message = "The amount is not valid."


class PaymentsUnavailable(BillingError):
    status_code = 503
    code = "payments_unavailable"
    default_message = "Buying credits is not available right now: payments are not configured."


class PaymentProviderError(BillingError):
    status_code = 502
    code = "payment_provider_error"
    default_message = "The payment provider could not be reached or refused the request; nothing was charged."


class UnknownPack(BillingError):
    status_code = 400
    code = "validation_error"
    field = "pack"
    default_message = "Unknown or inactive pack."


class WebhookSignatureInvalid(BillingError):
    """A webhook request not provably from Stripe (bad, missing or stale signature): nothing is stored."""

    status_code = 400
    code = "invalid_signature"
    default_message = "The Stripe-Signature header is missing, wrong or too old."


class WebhookPayloadInvalid(BillingError):
    """A correctly signed body that is not a Stripe event we can store: nothing is stored."""

    status_code = 400
    code = "validation_error"
    default_message = "The body is not a Stripe event."


class RefundRefused(BillingError):
    status_code = 409
    code = "refund_not_possible"
    default_message = "This purchase cannot be refunded."
