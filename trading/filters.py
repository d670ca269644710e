import django_filters

from qbsite.filters import QBFilterSet, StrictBooleanFilter, SymbolFilter, time_range_filters
from trading.models import (
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    StrategyPerformance,
    Trade,
    TradeStatus,
)
from trading.states import FINAL


class TradeFilter(QBFilterSet):
    symbol = SymbolFilter(field_name="symbol_id")
    side = django_filters.ChoiceFilter(choices=Side.choices)
    status = django_filters.ChoiceFilter(choices=TradeStatus.choices)
    strategy = django_filters.CharFilter(help_text="Strategy name, exact; empty for manual.")
    timestamp_after, timestamp_before = time_range_filters("timestamp", "Trades executed")

    class Meta:
        model = Trade
        fields = ["symbol", "side", "status", "strategy"]


class PositionFilter(QBFilterSet):
    symbol = SymbolFilter(field_name="symbol_id")
    open = StrictBooleanFilter(
        method="filter_open", help_text="true: holdings only (quantity > 0); false: flat ones."
    )

    class Meta:
        model = Position
        fields = ["symbol", "open"]

    def filter_open(self, queryset, name, value):
        return queryset.filter(quantity__gt=0) if value else queryset.filter(quantity=0)


class StrategyPerformanceFilter(QBFilterSet):
    strategy = django_filters.CharFilter(help_text="Strategy name, exact.")
    date = django_filters.DateFromToRangeFilter(
        help_text="date_after / date_before: trading days in that range (both inclusive)."
    )

    class Meta:
        model = StrategyPerformance
        fields = ["strategy", "date"]


class OrderFilter(QBFilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=OrderStatus.choices, help_text="One or more statuses (status=NEW&status=FILLED)."
    )
    open = StrictBooleanFilter(
        method="filter_open",
        help_text="true: orders not in a final status (they may still change); false: final.",
    )
    symbol = SymbolFilter(field_name="symbol_id")
    side = django_filters.ChoiceFilter(choices=Side.choices)
    order_type = django_filters.ChoiceFilter(choices=OrderType.choices)
    strategy = django_filters.CharFilter(
        field_name="strategy__name", help_text="The placing strategy's name, exact."
    )
    client_order_id = django_filters.CharFilter(help_text="Exact: find an order by your id.")
    mine = StrictBooleanFilter(
        method="filter_mine", help_text="true: only the orders you placed through the API."
    )
    created_after, created_before = time_range_filters("created_at", "Orders created")

    class Meta:
        model = Order
        fields = ["status", "symbol", "side", "order_type", "strategy", "client_order_id"]

    def filter_open(self, queryset, name, value):
        return queryset.exclude(status__in=FINAL) if value else queryset.filter(status__in=FINAL)

    def filter_mine(self, queryset, name, value):
        user = self.request.user if self.request else None
        if user is None:
            return queryset.none()
        return queryset.filter(user=user) if value else queryset.exclude(user=user)
