"""Admin for the ledger (trades), positions and strategy performance.

Trades are a ledger written by the order path: view only. Positions may be corrected by hand
(a reconciliation with the broker), but their PnL is computed, so it is read-only. Strategy
performance is computed from trades: view only.
"""

from django.contrib import admin
from django.db.models import Q

from qbsite.admin_utils import (
    BigTableAdminMixin,
    OperatorAdmin,
    ReadOnlyOperatorAdmin,
    RecentTimeFilter,
)
from trading.models import Position, StrategyPerformance, Trade


@admin.register(Trade)
class TradeAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = (
        "timestamp",
        "symbol",
        "side",
        "quantity",
        "price",
        "commission",
        "tax",
        "profit_loss",
        "strategy",
        "order_type",
        "status",
    )
    # No filter on strategy: its choices would be a DISTINCT over the ledger; search it instead.
    list_filter = (("timestamp", RecentTimeFilter), "side", "status", "order_type")
    search_fields = ("^symbol__symbol", "^symbol__name", "^strategy")
    list_select_related = ("symbol",)
    raw_id_fields = ("symbol",)
    ordering = ("-timestamp", "-id")
    sortable_by = ("timestamp",)


class OpenPositionFilter(admin.SimpleListFilter):
    title = "open / flat"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return (("yes", "Open"), ("no", "Flat"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(quantity__gt=0)
        if self.value() == "no":
            return queryset.filter(Q(quantity=0))
        return queryset


@admin.register(Position)
class PositionAdmin(OperatorAdmin):
    list_display = (
        "symbol",
        "stock_name",
        "quantity",
        "average_price",
        "current_price",
        "market_value",
        "unrealized_pnl",
        "realized_pnl",
        "updated_at",
    )
    list_filter = (OpenPositionFilter,)
    search_fields = ("^symbol__symbol", "symbol__name")
    list_select_related = ("symbol",)
    autocomplete_fields = ("symbol",)
    readonly_fields = ("unrealized_pnl", "realized_pnl", "updated_at")
    ordering = ("symbol",)

    @admin.display(description="name", ordering="symbol__name")
    def stock_name(self, obj):
        return obj.symbol.name

    @admin.display(description="market value")
    def market_value(self, obj):
        return obj.market_value


@admin.register(StrategyPerformance)
class StrategyPerformanceAdmin(ReadOnlyOperatorAdmin):
    list_display = (
        "date",
        "strategy",
        "total_return",
        "trades_count",
        "win_rate",
        "max_drawdown",
        "sharpe_ratio",
    )
    list_filter = ("strategy", ("date", admin.DateFieldListFilter))
    search_fields = ("^strategy",)
    ordering = ("-date", "strategy")
