import django_filters

from marketdata.models import Interval, Market, MarketData, Stock
from qbsite.filters import QBFilterSet, SymbolFilter, time_range_filters


class StockFilter(QBFilterSet):
    market = django_filters.ChoiceFilter(choices=Market.choices)
    sector = django_filters.CharFilter(lookup_expr="iexact", help_text="Sector, any case.")

    class Meta:
        model = Stock
        fields = ["market", "sector"]


class MarketDataFilter(QBFilterSet):
    """Optional filters. Give symbol and interval for one series (the primary key's index
    serves it); without them the cursor walks every series, newest first."""

    symbol = SymbolFilter()
    interval = django_filters.ChoiceFilter(choices=Interval.choices)
    time_after, time_before = time_range_filters("time", "Candles opening")

    class Meta:
        model = MarketData
        fields = ["symbol", "interval"]
