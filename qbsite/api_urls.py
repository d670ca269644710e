"""/api/v1/: every app's API routes. Basenames are fixed so reverse() names never drift."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from marketdata.api import (
    CandleSeriesPathView,
    CandleSeriesView,
    IndicatorsView,
    MarketDataViewSet,
    QuoteView,
    StockViewSet,
)
from ops.api import SystemLogViewSet
from qbsite.api import TokenView, UserViewSet
from risk.api import (
    LimitChangeViewSet,
    RiskAlertViewSet,
    RiskLimitsView,
    RiskLockViewSet,
    RiskMetricViewSet,
    TradingStateChangeViewSet,
    TradingStateView,
)
from trading.api import (
    AccountViewSet,
    OrderViewSet,
    PositionViewSet,
    StrategyPerformanceViewSet,
    TradeViewSet,
)
from trading.strategies.api import SignalViewSet, StrategyViewSet

router = DefaultRouter()
router.register("stocks", StockViewSet, basename="stock")
router.register("market-data", MarketDataViewSet, basename="market-data")
router.register("trades", TradeViewSet, basename="trade")
router.register("positions", PositionViewSet, basename="position")
router.register("strategy-performance", StrategyPerformanceViewSet, basename="strategy-performance")
router.register("strategies", StrategyViewSet, basename="strategy")
router.register("signals", SignalViewSet, basename="signal")
router.register("orders", OrderViewSet, basename="order")
router.register("accounts", AccountViewSet, basename="account")
router.register("risk-metrics", RiskMetricViewSet, basename="risk-metric")
router.register("risk-alerts", RiskAlertViewSet, basename="risk-alert")
router.register("risk-limit-changes", LimitChangeViewSet, basename="risk-limit-change")
router.register("risk-state-changes", TradingStateChangeViewSet, basename="risk-state-change")
router.register("risk-locks", RiskLockViewSet, basename="risk-lock")
router.register("system-logs", SystemLogViewSet, basename="system-log")
router.register("users", UserViewSet, basename="user")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="auth-token"),
    path("quotes/<str:symbol>/", QuoteView.as_view(), name="quote"),
    path("candles/", CandleSeriesView.as_view(), name="candles"),
    path(
        "candles/<str:symbol>/<str:interval>/", CandleSeriesPathView.as_view(), name="candle-series"
    ),
    path("indicators/<str:symbol>/", IndicatorsView.as_view(), name="indicators"),
    path("risk/state/", TradingStateView.as_view(), name="risk-state"),
    path("risk/limits/", RiskLimitsView.as_view(), name="risk-limits"),
    *router.urls,
]
