"""Input and output shapes of the pack and purchase routes."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from billing.models import CreditPack, Purchase
from billing.serializers import StrictCharField, StrictIntegerField, StrictSerializer


class PurchaseRequest(StrictSerializer):
    pack = StrictCharField(max_length=50, help_text="The pack's `id` from GET /packs (a slug such as credits-115).")
    quantity = StrictIntegerField(min_value=1, max_value=settings.PURCHASE_MAX_QUANTITY, default=1)


class PackOut(serializers.ModelSerializer):
    id = serializers.CharField(source="slug", help_text="Name this in POST /me/checkout and /me/payment-intents.")

    class Meta:
        model = CreditPack
        fields = ["id", "name", "credits", "price_cents", "currency"]


class PackListOut(serializers.Serializer):
    data = PackOut(many=True)  # type: ignore[assignment]  # the output key; DRF pops declared fields


class PurchaseOut(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    pack = serializers.CharField(source="pack.slug")

    class Meta:
        model = Purchase
        fields = [
            "id",
            "pack",
            "quantity",
            "credits",
            "amount_cents",
            "currency",
            "status",
            "refunded_cents",
            "clawed_back_credits",
            "created_at",
            "paid_at",
            "expires_at",
        ]


class PurchaseListOut(serializers.Serializer):
    data = PurchaseOut(many=True)  # type: ignore[assignment]  # the output key; DRF pops declared fields


class CheckoutOut(serializers.Serializer):
    id = serializers.CharField(help_text="The Stripe Checkout Session id (cs_...).")
    url = serializers.URLField(help_text="Send the buyer here.")
    purchase = serializers.CharField(help_text="Our purchase id (pur_...); see GET /me/purchases.")


class PaymentIntentOut(serializers.Serializer):
    id = serializers.CharField(help_text="The Stripe PaymentIntent id (pi_...).")
    client_secret = serializers.CharField(help_text="For Stripe.js in the embedded payment form.")
    purchase = serializers.CharField(help_text="Our purchase id (pur_...); see GET /me/purchases.")


class WebhookAckOut(serializers.Serializer):
    received = serializers.BooleanField()
    event = serializers.CharField()
    status = serializers.CharField()
