import django_filters

from qbsite.filters import QBFilterSet, StrictBooleanFilter, SymbolFilter, time_range_filters
from trading.models import Position, Side, StrategyPerformance, Trade, TradeStatus


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
