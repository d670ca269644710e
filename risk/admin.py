"""Admin for risk snapshots: written by the risk engine, kept as history, so view only."""

from django.contrib import admin

from qbsite.admin_utils import ReadOnlyOperatorAdmin, RecentTimeFilter
from risk.models import RiskMetric


@admin.register(RiskMetric)
class RiskMetricAdmin(ReadOnlyOperatorAdmin):
    list_display = (
        "timestamp",
        "portfolio_value",
        "daily_pnl",
        "var_95",
        "max_drawdown",
        "sharpe_ratio",
        "beta",
    )
    list_filter = (("timestamp", RecentTimeFilter),)
    ordering = ("-timestamp",)
