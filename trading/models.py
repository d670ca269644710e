from django.db import models
from django.db.models import Q

from qbsite.fields import MoneyField, PriceField, RatioField


class Side(models.TextChoices):
    BUY = "BUY", "Buy"
    SELL = "SELL", "Sell"


class OrderType(models.TextChoices):
    MARKET = "MARKET", "Market"
    LIMIT = "LIMIT", "Limit"


class TradeStatus(models.TextChoices):
    PENDING = "PENDING", "Pending settlement"
    SETTLED = "SETTLED", "Settled"
    CANCELED = "CANCELED", "Canceled (busted)"


class Trade(models.Model):
    """One execution (a fill) in the ledger (trades). Written by services only."""

    timestamp = models.DateTimeField(db_index=True)
    symbol = models.ForeignKey(
        "marketdata.Stock", on_delete=models.PROTECT, db_column="symbol", related_name="trades"
    )
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.PositiveIntegerField()
    price = PriceField()
    commission = MoneyField(default=0)
    tax = MoneyField(default=0)
    strategy = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="Strategy name; blank for manual."
    )
    order_type = models.CharField(max_length=6, choices=OrderType.choices)
    status = models.CharField(
        max_length=8, choices=TradeStatus.choices, default=TradeStatus.PENDING
    )
    profit_loss = MoneyField(
        null=True, blank=True, help_text="Realized PnL of a sell, net of commission and tax."
    )

    class Meta:
        db_table = "trades"
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["symbol", "-timestamp"], name="trades_symbol_time_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="trades_quantity_gt_0"),
            models.CheckConstraint(condition=Q(price__gt=0), name="trades_price_gt_0"),
            models.CheckConstraint(condition=Q(commission__gte=0), name="trades_commission_gte_0"),
            models.CheckConstraint(condition=Q(tax__gte=0), name="trades_tax_gte_0"),
            models.CheckConstraint(condition=Q(side__in=Side.values), name="trades_side_valid"),
            models.CheckConstraint(
                condition=Q(order_type__in=OrderType.values), name="trades_order_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=TradeStatus.values), name="trades_status_valid"
            ),
            # Only a sell realizes profit or loss.
            models.CheckConstraint(
                condition=Q(profit_loss__isnull=True) | Q(side=Side.SELL),
                name="trades_profit_loss_only_on_sell",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol_id} @ {self.price}"

    @property
    def amount(self):
        return self.price * self.quantity


class Position(models.Model):
    """The holding in one symbol (positions). Long only: KRX retail accounts cannot short."""

    symbol = models.OneToOneField(
        "marketdata.Stock", on_delete=models.PROTECT, db_column="symbol", related_name="position"
    )
    quantity = models.PositiveIntegerField(default=0)
    average_price = PriceField(default=0)
    current_price = PriceField(null=True, blank=True)
    unrealized_pnl = MoneyField(default=0)
    realized_pnl = MoneyField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "positions"
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=0), name="positions_quantity_gte_0"),
            models.CheckConstraint(
                condition=Q(average_price__gte=0), name="positions_average_price_gte_0"
            ),
            # An open position has a cost; a flat one has no unrealized PnL.
            models.CheckConstraint(
                condition=Q(quantity=0) | Q(average_price__gt=0),
                name="positions_open_has_average_price",
            ),
            models.CheckConstraint(
                condition=Q(quantity__gt=0) | Q(unrealized_pnl=0),
                name="positions_flat_has_no_unrealized_pnl",
            ),
            models.CheckConstraint(
                condition=Q(current_price__isnull=True) | Q(current_price__gt=0),
                name="positions_current_price_gt_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol_id} x {self.quantity}"

    @property
    def market_value(self):
        return (self.current_price or self.average_price) * self.quantity


class StrategyPerformance(models.Model):
    """One strategy's results for one trading day (strategy_performance)."""

    strategy = models.CharField(max_length=64)
    date = models.DateField()
    total_return = RatioField(help_text="0.0123 = +1.23 %.")
    trades_count = models.PositiveIntegerField(default=0)
    win_rate = RatioField(null=True, blank=True, help_text="0..1; empty when no trade closed.")
    max_drawdown = RatioField(default=0, help_text="0..1, as a positive fraction.")
    sharpe_ratio = RatioField(null=True, blank=True)

    class Meta:
        db_table = "strategy_performance"
        ordering = ["-date", "strategy"]
        verbose_name_plural = "strategy performance"
        constraints = [
            models.UniqueConstraint(
                fields=["strategy", "date"], name="strategy_performance_strategy_date_uniq"
            ),
            models.CheckConstraint(
                condition=Q(win_rate__isnull=True) | (Q(win_rate__gte=0) & Q(win_rate__lte=1)),
                name="strategy_performance_win_rate_0_1",
            ),
            models.CheckConstraint(
                condition=Q(max_drawdown__gte=0) & Q(max_drawdown__lte=1),
                name="strategy_performance_max_drawdown_0_1",
            ),
            models.CheckConstraint(
                condition=Q(total_return__gte=-1), name="strategy_performance_return_gte_minus_1"
            ),
            models.CheckConstraint(
                condition=~Q(strategy=""), name="strategy_performance_strategy_not_blank"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.strategy} {self.date}"
