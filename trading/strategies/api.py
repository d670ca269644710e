"""Strategies and signals over the API (serializers, filters and viewsets in one small module).

- /api/v1/strategies/: every role reads; operators create, change and delete (through the
  services: parameters checked against the class, symbols against stocks_metadata). A strategy
  that has signals or orders cannot be deleted (409): disable it. /strategies/kinds/ lists the
  registered kinds with their declared parameters.
- /api/v1/signals/: read-only for every role, newest first (cursor pagination), filters
  strategy (name), symbol, action, outcome, interval, created_at_after / created_at_before.

Wired in qbsite/api_urls.py:
    router.register("strategies", StrategyViewSet, basename="strategy")
    router.register("signals", SignalViewSet, basename="signal")
"""

from __future__ import annotations

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from qbsite.filters import QBFilterSet, StableOrderingFilter, SymbolFilter, time_range_filters
from qbsite.pagination import KeysetCursorPagination
from qbsite.permissions import ALL_ROLES
from qbsite.roles import Role
from trading.models import Side, Signal, SignalOutcome, Strategy

from . import registry
from .services import INTERVALS, strategy_create, strategy_delete, strategy_update

# --- serializers -----------------------------------------------------------------------------


class StrategySerializer(serializers.ModelSerializer):
    parameters = serializers.JSONField(
        required=False,
        help_text="The class's parameters (GET /strategies/kinds/); missing ones take their "
        "defaults, and the stored value has them all.",
    )
    symbols = serializers.ListField(
        child=serializers.CharField(max_length=6), required=False, allow_empty=True
    )
    interval = serializers.CharField(required=False, help_text=f"One of {', '.join(INTERVALS)}.")

    class Meta:
        model = Strategy
        fields = [
            "id",
            "name",
            "kind",
            "parameters",
            "symbols",
            "interval",
            "enabled",
            "capital_allocation",
            "disabled_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "disabled_reason", "created_at", "updated_at"]
        extra_kwargs = {"kind": {"help_text": "A registered kind (GET /strategies/kinds/)."}}


class SignalSerializer(serializers.ModelSerializer):
    strategy = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Signal
        fields = [
            "id",
            "strategy",
            "symbol",
            "interval",
            "time",
            "action",
            "confidence",
            "price",
            "quantity",
            "reason",
            "outcome",
            "outcome_reason",
            "created_at",
        ]
        read_only_fields = fields


class ParamSchema(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    default = serializers.JSONField()
    min = serializers.JSONField(allow_null=True)
    max = serializers.JSONField(allow_null=True)
    choices = serializers.ListField(child=serializers.JSONField())
    help = serializers.CharField()


def _kind_row(kind: str, cls) -> dict:
    return {
        "kind": kind,
        "label": cls.label,
        "description": cls.description,
        "intervals": list(cls.intervals) if cls.intervals else list(INTERVALS),
        "parameters": [{"name": name, **param.schema()} for name, param in cls.parameters.items()],
    }


# --- filters ---------------------------------------------------------------------------------


class SignalFilter(QBFilterSet):
    strategy = django_filters.CharFilter(field_name="strategy__name", help_text="Strategy name.")
    symbol = SymbolFilter(field_name="symbol_id")
    action = django_filters.ChoiceFilter(choices=Side.choices)
    outcome = django_filters.ChoiceFilter(choices=SignalOutcome.choices)
    interval = django_filters.ChoiceFilter(choices=[(i, i) for i in INTERVALS])
    created_at_after, created_at_before = time_range_filters("created_at", "Signals made")

    class Meta:
        model = Signal
        fields = ["strategy", "symbol", "action", "outcome", "interval"]


class StrategyFilter(QBFilterSet):
    kind = django_filters.CharFilter()
    interval = django_filters.ChoiceFilter(choices=[(i, i) for i in INTERVALS])

    class Meta:
        model = Strategy
        fields = ["kind", "enabled", "interval"]


# --- viewsets --------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="Strategies"),
    create=extend_schema(summary="Configure a strategy (operators)"),
    update=extend_schema(summary="Change a strategy (operators)"),
    partial_update=extend_schema(summary="Change some fields of a strategy (operators)"),
    destroy=extend_schema(summary="Delete a strategy that never signaled (operators)"),
)
class StrategyViewSet(viewsets.ModelViewSet):
    """Configured strategies. Enabling one (enabled=true) clears disabled_reason, which the
    strategy engine sets when it disables a strategy that raised."""

    queryset = Strategy.objects.all()
    serializer_class = StrategySerializer
    read_roles = ALL_ROLES
    write_roles = frozenset({Role.OPERATOR})
    filter_backends = [DjangoFilterBackend, StableOrderingFilter]
    filterset_class = StrategyFilter
    ordering_fields = ["name", "kind", "updated_at"]
    ordering = ["name"]

    def perform_create(self, serializer):
        serializer.instance = strategy_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = strategy_update(
            strategy=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        strategy_delete(strategy=instance)

    @extend_schema(
        summary="The registered strategy kinds and their parameters",
        responses=inline_serializer(
            "StrategyKind",
            {
                "kind": serializers.CharField(),
                "label": serializers.CharField(),
                "description": serializers.CharField(),
                "intervals": serializers.ListField(child=serializers.CharField()),
                "parameters": ParamSchema(many=True),
            },
            many=True,
        ),
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def kinds(self, request):
        return Response([_kind_row(kind, cls) for kind, cls in registry().items()])


@extend_schema_view(list=extend_schema(summary="Signals, newest first (cursor pagination)"))
class SignalViewSet(viewsets.ReadOnlyModelViewSet):
    """What the strategies asked for, one per strategy, symbol and candle; `outcome` says
    whether the orders engine placed an order (ORDERED), skipped it (SKIPPED, with
    outcome_reason) or has not yet (PENDING)."""

    queryset = Signal.objects.select_related("strategy")
    serializer_class = SignalSerializer
    read_roles = ALL_ROLES
    filter_backends = [DjangoFilterBackend]
    filterset_class = SignalFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-created_at", "-id")
