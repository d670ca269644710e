from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from qbsite.fields import MoneyField, RatioField, SymbolField


class RiskMetric(models.Model):
    """A snapshot of the portfolio's risk (risk_metrics), taken at an interval and on breaches."""

    timestamp = models.DateTimeField(db_index=True)
    portfolio_value = MoneyField()
    daily_pnl = MoneyField(default=0)
    var_95 = MoneyField(
        null=True, blank=True, help_text="1-day historical VaR at 95 %, KRW, as a positive loss."
    )
    max_drawdown = RatioField(default=0, help_text="0..1, as a positive fraction.")
    sharpe_ratio = RatioField(null=True, blank=True)
    beta = RatioField(null=True, blank=True)

    class Meta:
        db_table = "risk_metrics"
        ordering = ["-timestamp"]
        constraints = [
            models.CheckConstraint(
                condition=Q(portfolio_value__gte=0), name="risk_metrics_portfolio_value_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(var_95__isnull=True) | Q(var_95__gte=0), name="risk_metrics_var_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(max_drawdown__gte=0) & Q(max_drawdown__lte=1),
                name="risk_metrics_max_drawdown_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"risk @ {self.timestamp:%Y-%m-%d %H:%M}"


# --- Limits, trading state, locks, alerts (issue 5) ------------------------------------------
#
# risk.services is the only writer of these tables (limits_update, trading_state_set,
# lock_create / lock_remove); the risk engine writes risk_alerts. See risk/services.py.

_RATIO_HELP = "A fraction of the portfolio value: 0.2 = 20 %."


# The limits that are counts (or seconds): each at least 1 (a CHECK here, a clear error in
# risk.services before the database sees it).
COUNT_LIMITS = (
    "max_consecutive_losses",
    "max_trades_per_day",
    "max_orders_per_second",
    "stoploss_guard_count",
    "stoploss_guard_window_seconds",
    "metrics_interval_seconds",
)


class RiskLimits(models.Model):
    """The risk limits in force (risk_limits): exactly one row (id 1), edited through
    risk.services.limits_update, which records every changed field as a LimitChange."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)

    # Exposure (fractions of the portfolio value: cash + positions at their marked price).
    max_position_ratio = RatioField(
        default=Decimal("0.20"), help_text="Largest value in one symbol. " + _RATIO_HELP
    )
    max_sector_ratio = RatioField(
        default=Decimal("0.30"), help_text="Largest value in one sector. " + _RATIO_HELP
    )
    max_exposure_ratio = RatioField(
        default=Decimal("0.90"), help_text="Largest value in all positions. " + _RATIO_HELP
    )
    min_cash_reserve_ratio = RatioField(
        default=Decimal("0.10"), help_text="Cash a buy must leave free. " + _RATIO_HELP
    )
    # Order size (KRW).
    min_order_value = MoneyField(default=Decimal(10_000), help_text="KRW.")
    max_order_value = MoneyField(default=Decimal(1_000_000), help_text="KRW.")
    # Losses (KRW, as positive amounts) and streaks.
    daily_loss_limit = MoneyField(
        default=Decimal(50_000), help_text="Realized loss in a KST trading day, KRW (positive)."
    )
    monthly_loss_limit = MoneyField(
        default=Decimal(500_000), help_text="Realized loss in a KST month, KRW (positive)."
    )
    max_consecutive_losses = models.PositiveIntegerField(
        default=5, help_text="Losing sells in a row before buys stop."
    )
    # Frequency.
    max_trades_per_day = models.PositiveIntegerField(
        default=20, help_text="Orders sent to the broker in a KST trading day."
    )
    same_symbol_interval_seconds = models.PositiveIntegerField(
        default=60, help_text="Least time between two orders on the same symbol."
    )
    max_orders_per_second = models.PositiveIntegerField(
        default=5, help_text="Orders sent to the broker in any one second."
    )
    # Protections (the risk engine's; fractions of the entry price).
    stop_loss_ratio = RatioField(default=Decimal("0.03"), help_text="0.03 = sell at -3 %.")
    take_profit_ratio = RatioField(default=Decimal("0.05"), help_text="0.05 = sell at +5 %.")
    trailing_stop_ratio = RatioField(
        default=Decimal("0.02"), help_text="0.02 = sell 2 % below the highest price since entry."
    )
    stoploss_cooldown_seconds = models.PositiveIntegerField(
        default=1800, help_text="After a stop-loss, the symbol is locked this long."
    )
    stoploss_guard_count = models.PositiveIntegerField(
        default=3, help_text="Stop-losses within the window that lock all buying."
    )
    stoploss_guard_window_seconds = models.PositiveIntegerField(default=3600)
    stoploss_guard_lock_seconds = models.PositiveIntegerField(default=3600)
    # The risk engine.
    benchmark_symbol = SymbolField(default="069500", help_text="Beta is measured against it.")
    metrics_interval_seconds = models.PositiveIntegerField(default=60)
    alert_dedup_seconds = models.PositiveIntegerField(
        default=300, help_text="The same alert is not raised again within this time."
    )

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "risk_limits"
        verbose_name = "risk limits"
        verbose_name_plural = "risk limits"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="risk_limits_single_row"),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{name}__gt": 0}) & Q(**{f"{name}__lte": 1}),
                    name=f"risk_limits_{name}_0_1",
                )
                for name in (
                    "max_position_ratio",
                    "max_sector_ratio",
                    "max_exposure_ratio",
                    "stop_loss_ratio",
                    "take_profit_ratio",
                    "trailing_stop_ratio",
                )
            ),
            models.CheckConstraint(
                condition=Q(min_cash_reserve_ratio__gte=0) & Q(min_cash_reserve_ratio__lt=1),
                name="risk_limits_min_cash_reserve_ratio_0_1",
            ),
            models.CheckConstraint(
                condition=Q(min_order_value__gte=0), name="risk_limits_min_order_value_gte_0"
            ),
            models.CheckConstraint(
                condition=Q(max_order_value__gte=F("min_order_value")) & Q(max_order_value__gt=0),
                name="risk_limits_order_value_range",
            ),
            models.CheckConstraint(
                condition=Q(daily_loss_limit__gt=0) & Q(monthly_loss_limit__gt=0),
                name="risk_limits_loss_limits_gt_0",
            ),
            *(
                models.CheckConstraint(
                    condition=Q(**{f"{name}__gt": 0}), name=f"risk_limits_{name}_gt_0"
                )
                for name in COUNT_LIMITS
            ),
        ]

    def __str__(self) -> str:
        return "Risk limits"


class LimitChange(models.Model):
    """One changed field of the risk limits (risk_limit_changes): the audit trail, never edited."""

    field = models.CharField(max_length=64)
    old_value = models.TextField()
    new_value = models.TextField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty when an engine or a command changed it (see actor).",
    )
    actor = models.CharField(max_length=64, help_text="user:<name>, engine:<name>, ...")
    changed_at = models.DateTimeField(db_index=True)
    reason = models.TextField(blank=True)

    class Meta:
        db_table = "risk_limit_changes"
        ordering = ["-changed_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(field=""), name="risk_limit_changes_field_set"),
        ]

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value} -> {self.new_value}"


class State(models.TextChoices):
    ACTIVE = "ACTIVE", "Active"
    REDUCING = "REDUCING", "Reducing only"
    HALTED = "HALTED", "Halted"


class TradingState(models.Model):
    """Whether QB may trade (trading_state): exactly one row (id 1).

    ACTIVE: every order is checked as usual; REDUCING: only sells (orders that reduce a
    position); HALTED: no new orders (cancels still pass)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    reason = models.TextField(blank=True)
    changed_by = models.CharField(max_length=64, blank=True, help_text="user:<name>, engine:...")
    changed_at = models.DateTimeField(null=True, blank=True)
    automatic = models.BooleanField(default=False, help_text="Set by the risk engine.")

    class Meta:
        db_table = "trading_state"
        verbose_name = "trading state"
        verbose_name_plural = "trading state"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="trading_state_single_row"),
            models.CheckConstraint(
                condition=Q(state__in=State.values), name="trading_state_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.state


class TradingStateChange(models.Model):
    """One change of the trading state (trading_state_changes): history, never edited."""

    from_state = models.CharField(max_length=8, choices=State.choices)
    to_state = models.CharField(max_length=8, choices=State.choices)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=64)
    automatic = models.BooleanField(default=False)
    at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "trading_state_changes"
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(from_state__in=State.values) & Q(to_state__in=State.values),
                name="trading_state_changes_states_valid",
            ),
            models.CheckConstraint(
                condition=~Q(from_state=F("to_state")), name="trading_state_changes_is_a_change"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_state} -> {self.to_state}"


class LockKind(models.TextChoices):
    COOLDOWN = "COOLDOWN", "Cool-down after a stop-loss"
    STOPLOSS_GUARD = "STOPLOSS_GUARD", "Stop-loss guard"
    MANUAL = "MANUAL", "Manual"


class RiskLock(models.Model):
    """A temporary ban on orders (risk_locks) for a symbol, a strategy, both, or (neither set)
    everything, until `until` or until removed. Pre-trade checks deny with LOCKED."""

    kind = models.CharField(max_length=16, choices=LockKind.choices)
    symbol = models.ForeignKey(
        "marketdata.Stock",
        on_delete=models.PROTECT,
        db_column="symbol",
        null=True,
        blank=True,
        related_name="+",
    )
    strategy = models.ForeignKey(
        "trading.Strategy", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_by = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    until = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.CharField(max_length=64, blank=True)

    class Meta:
        db_table = "risk_locks"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["until"], condition=Q(removed_at__isnull=True), name="risk_locks_live_idx"
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=LockKind.values), name="risk_locks_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(until__gt=F("created_at")), name="risk_locks_until_after_created"
            ),
            models.CheckConstraint(
                condition=(Q(removed_at__isnull=True) & Q(removed_by=""))
                | (Q(removed_at__isnull=False) & ~Q(removed_by="")),
                name="risk_locks_removed_with_actor",
            ),
        ]

    def __str__(self) -> str:
        scope = " ".join(filter(None, [self.symbol_id, self.strategy and self.strategy.name]))
        return f"{self.kind} {scope or 'everything'} until {self.until:%Y-%m-%d %H:%M}"


class Severity(models.TextChoices):
    WARNING = "WARNING", "Warning"
    CRITICAL = "CRITICAL", "Critical"


class RiskAlert(models.Model):
    """A risk event worth a person's attention (risk_alerts): a breached or near limit, a
    protection that fired, a trading state change. Written by the risk engine and by
    risk.services.trading_state_set; never edited."""

    alert_type = models.CharField(max_length=64, db_index=True)
    symbol = models.ForeignKey(
        "marketdata.Stock",
        on_delete=models.PROTECT,
        db_column="symbol",
        null=True,
        blank=True,
        related_name="+",
    )
    current_value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    limit_value = models.DecimalField(max_digits=24, decimal_places=6, null=True, blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    action_taken = models.TextField(blank=True)
    message = models.TextField()
    dedup_key = models.CharField(
        max_length=128,
        blank=True,
        help_text="Alerts with the same key within alert_dedup_seconds are one alert.",
    )
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "risk_alerts"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["dedup_key", "-created_at"], name="risk_alerts_dedup_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(severity__in=Severity.values), name="risk_alerts_severity_valid"
            ),
            models.CheckConstraint(condition=~Q(alert_type=""), name="risk_alerts_type_set"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.alert_type}: {self.message[:60]}"
