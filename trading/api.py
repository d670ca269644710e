"""The ledger, read-only for every role: services write it (orders and fills, later issues)."""

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets

from qbsite.filters import StableOrderingFilter
from qbsite.pagination import KeysetCursorPagination
from trading.filters import PositionFilter, StrategyPerformanceFilter, TradeFilter
from trading.models import Position, StrategyPerformance, Trade
from trading.serializers import (
    PositionSerializer,
    StrategyPerformanceSerializer,
    TradeSerializer,
)


class TradeViewSet(viewsets.ReadOnlyModelViewSet):
    """Executions, newest first (cursor pagination on timestamp, then id)."""

    queryset = Trade.objects.all()
    serializer_class = TradeSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = TradeFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-timestamp", "-id")


class PositionViewSet(viewsets.ReadOnlyModelViewSet):
    """Holdings, one per symbol (`open=true` for those with shares)."""

    queryset = Position.objects.all()
    serializer_class = PositionSerializer
    filter_backends = [DjangoFilterBackend, StableOrderingFilter]
    filterset_class = PositionFilter
    ordering_fields = ["symbol", "quantity", "unrealized_pnl", "realized_pnl", "updated_at"]
    ordering = ["symbol"]
    lookup_field = "symbol"
    lookup_value_regex = "[0-9A-Z]{6}"


class StrategyPerformanceViewSet(viewsets.ReadOnlyModelViewSet):
    """Each strategy's daily results, newest day first."""

    queryset = StrategyPerformance.objects.all()
    serializer_class = StrategyPerformanceSerializer
    filter_backends = [DjangoFilterBackend, StableOrderingFilter]
    filterset_class = StrategyPerformanceFilter
    ordering_fields = ["date", "strategy", "total_return", "sharpe_ratio"]
    ordering = ["-date", "strategy"]
