"""Input and output shapes of the notification routes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.serializers import StrictCharField, StrictSerializer
from billing.serializers import StrictIntegerField
from notifications.models import AutoRecharge, EventType, WebhookEndpoint
from notifications.services.preferences import EMAIL_KINDS, MAX_THRESHOLD_CREDITS
from notifications.services.recharge import MAX_MONTHLY_CAP_CENTS
from notifications.services.recharge import MAX_THRESHOLD_CREDITS as MAX_RECHARGE_THRESHOLD


class StrictBooleanField(serializers.BooleanField):
    """true or false in JSON: refuses "yes", 1 and the other spellings DRF would accept."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictListField(serializers.ListField):
    def to_internal_value(self, data: Any) -> list:
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        return super().to_internal_value(data)


# --- Webhook endpoints ------------------------------------------------------------------------


class WebhookEndpointRequest(StrictSerializer):
    url = StrictCharField(max_length=2000, help_text="https:// URL that receives the signed POSTs.")
    description = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    event_types = StrictListField(
        child=serializers.ChoiceField(choices=EventType.values),
        required=False,
        default=list,
        max_length=len(EventType.values),
        help_text="Event types to send; empty or absent: every type.",
    )


class WebhookEndpointOut(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "event_types", "created_at"]


class WebhookEndpointCreatedOut(WebhookEndpointOut):
    secret = serializers.CharField(help_text="The signing secret: shown here once, never again.")

    class Meta(WebhookEndpointOut.Meta):
        fields = [*WebhookEndpointOut.Meta.fields, "secret"]


class WebhookEndpointListOut(serializers.Serializer):
    data = WebhookEndpointOut(many=True)  # type: ignore[assignment]  # the output key; DRF pops declared fields


# --- Preferences ------------------------------------------------------------------------------


# Each email kind and its switch: the kinds are named, and no other is accepted.
_SWITCHES = {
    "type": "object",
    "properties": {str(kind): {"type": "boolean"} for kind in EMAIL_KINDS},
    "additionalProperties": False,
}


@extend_schema_field(_SWITCHES)
class EmailSwitchesField(serializers.DictField):
    child = StrictBooleanField()

    def to_internal_value(self, data: Any) -> dict[str, bool]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        unknown = sorted(set(data) - set(EMAIL_KINDS))
        if unknown:
            raise serializers.ValidationError(
                f"Unknown email kinds: {', '.join(unknown)}. Known: {', '.join(EMAIL_KINDS)}."
            )
        return super().to_internal_value(data)


class NotificationsRequest(StrictSerializer):
    low_balance_threshold = StrictIntegerField(
        min_value=0,
        max_value=MAX_THRESHOLD_CREDITS,
        required=False,
        allow_null=True,
        help_text="balance.low below this many credits; null: the default.",
    )
    emails = EmailSwitchesField(required=False, help_text="Email kind: true (send) or false (do not).")


@extend_schema_field({**_SWITCHES, "required": [str(kind) for kind in EMAIL_KINDS]})
class EmailSwitchesOut(serializers.DictField):
    child = serializers.BooleanField()


class NotificationsOut(serializers.Serializer):
    low_balance_threshold = serializers.IntegerField(allow_null=True, help_text="Your own threshold, or null.")
    effective_low_balance_threshold = serializers.IntegerField()
    default_low_balance_threshold = serializers.IntegerField()
    emails = EmailSwitchesOut()


# --- Auto-recharge --------------------------------------------------------------------------


class AutoRechargeRequest(StrictSerializer):
    pack = StrictCharField(max_length=50, help_text="A pack's id from GET /packs.")
    threshold_credits = StrictIntegerField(min_value=1, max_value=MAX_RECHARGE_THRESHOLD)
    monthly_cap_cents = StrictIntegerField(min_value=1, max_value=MAX_MONTHLY_CAP_CENTS)
    enabled = StrictBooleanField(required=False, default=True)


class CardRequest(StrictSerializer):
    setup_intent = StrictCharField(max_length=255, help_text="The SetupIntent (seti_...) the card was confirmed with.")

    def validate_setup_intent(self, value: str) -> str:
        if not value.startswith("seti_"):
            raise serializers.ValidationError("A SetupIntent id starts with seti_.")
        return value


# The saved card, or null: spelled out, since OpenAPI 3.0 ignores `nullable` beside a bare $ref
# (what drf-spectacular makes of a nested serializer with allow_null).
@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {"brand": {"type": "string"}, "last4": {"type": "string"}},
        "required": ["brand", "last4"],
        "description": "The saved card, null when there is none.",
    }
)
class CardOut(serializers.Serializer):
    brand = serializers.CharField()
    last4 = serializers.CharField()


class AutoRechargeOut(serializers.Serializer):
    enabled = serializers.BooleanField()
    pack = serializers.CharField(allow_null=True)
    threshold_credits = serializers.IntegerField()
    monthly_cap_cents = serializers.IntegerField()
    spent_this_month_cents = serializers.IntegerField()
    card = CardOut(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    disabled_reason = serializers.CharField()


def auto_recharge_body(row: AutoRecharge, spent_cents: int) -> dict[str, Any]:
    card = {"brand": row.card_brand, "last4": row.card_last4} if row.stripe_payment_method_id else None
    return {
        "enabled": row.enabled,
        "pack": row.pack.slug if row.pack is not None else None,
        "threshold_credits": row.threshold_credits,
        "monthly_cap_cents": row.monthly_cap_cents,
        "spent_this_month_cents": spent_cents,
        "card": card,
        "consecutive_failures": row.consecutive_failures,
        "disabled_reason": row.disabled_reason,
    }


class SetupIntentOut(serializers.Serializer):
    id = serializers.CharField(help_text="The SetupIntent (seti_...).")
    client_secret = serializers.CharField(help_text="For Stripe.js confirmCardSetup in the browser.")
