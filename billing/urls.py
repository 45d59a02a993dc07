"""Billing's routes, served by config/urls.py: `api_v1` under /api/v1/, `web_pages` at the site's
root, `webhooks` as they are."""

from __future__ import annotations

from django.urls import path

import config.converters  # noqa: F401 (registers "pubid": public ids in paths, anything else a 404)

from . import api, catalogue_api, me_api, purchase_api, verification_web, web

# Django tries the patterns in order: the generation service's routes, called on every request,
# come first (no two patterns here match the same path, so the order decides nothing else).
api_v1 = [
    path("accounts/<pubid:account_id>/balance", api.BalanceView.as_view(), name="balance"),
    path("accounts/<pubid:account_id>/debits", api.DebitCreateView.as_view(), name="debit-create"),
    path("accounts/<pubid:account_id>/holds", api.HoldCreateView.as_view(), name="hold-create"),
    path("holds/<pubid:hold_id>/capture", api.HoldCaptureView.as_view(), name="hold-capture"),
    path("debits/batch", api.DebitBatchView.as_view(), name="debit-batch"),
    path("holds/<pubid:hold_id>/release", api.HoldReleaseView.as_view(), name="hold-release"),
    path("holds/<pubid:hold_id>", api.HoldDetailView.as_view(), name="hold-detail"),
    path("debits/<pubid:debit_id>/refund", api.DebitRefundView.as_view(), name="debit-refund"),
    path("accounts/<pubid:account_id>/ledger", api.LedgerView.as_view(), name="ledger"),
    path("auth/signup", me_api.SignupView.as_view(), name="signup"),
    path("me", me_api.MeView.as_view(), name="me"),
    path("me/ledger", me_api.MeLedgerView.as_view(), name="me-ledger"),
    path("packs", purchase_api.PackListView.as_view(), name="packs"),
    path("operations", catalogue_api.OperationListView.as_view(), name="operations"),
    path("me/checkout", purchase_api.CheckoutView.as_view(), name="me-checkout"),
    path("me/payment-intents", purchase_api.PaymentIntentView.as_view(), name="me-payment-intents"),
    path("me/purchases", purchase_api.MePurchasesView.as_view(), name="me-purchases"),
]

# End users' HTML pages (session login, CSRF on). Checkout returns to billing/success and
# billing/cancel (CHECKOUT_SUCCESS_URL / CHECKOUT_CANCEL_URL).
web_pages = [
    path("", web.home, name="web-home"),
    path("signup", web.signup_page, name="web-signup"),
    path("verify-email", verification_web.verify_email_page, name="web-verify-email"),
    path("verify-email/send", verification_web.verify_email_send, name="web-verify-email-send"),
    path("billing", web.billing_page, name="web-billing"),
    path("billing/buy", web.buy, name="web-buy"),
    path("billing/success", web.checkout_return, {"outcome": "success"}, name="web-checkout-success"),
    path("billing/cancel", web.checkout_return, {"outcome": "cancel"}, name="web-checkout-cancel"),
]

webhooks = [
    path("stripe/webhook", purchase_api.stripe_webhook, name="stripe-webhook"),
]
