"""What an integrator can spend on: GET /operations lists the active operations and their prices,
the names a debit or a hold may give as `operation`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.models import Operation
from billing.schema import PUBLIC_READ_ERRORS


class OperationOut(serializers.ModelSerializer):
    id = serializers.CharField(source="code", help_text="Name this as `operation` in a debit or a hold.")
    credits = serializers.IntegerField(help_text="Its price in credits.")

    class Meta:
        model = Operation
        fields = ["id", "credits", "description"]


class OperationListOut(serializers.Serializer):
    data = OperationOut(many=True)  # type: ignore[assignment]  # the output key; DRF pops declared fields


class OperationListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses={200: OperationListOut, **PUBLIC_READ_ERRORS},
        tags=["operations"],
        description="The active operations and their prices in credits, cheapest first. Anyone may read it.",
    )
    def get(self, request: Request) -> Response:
        operations = Operation.objects.filter(active=True).order_by("credits", "code")
        return Response(OperationListOut({"data": operations}).data)
