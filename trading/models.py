from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q

from qbsite.fields import MoneyField, PriceField, RatioField, SymbolField


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
    order = models.ForeignKey(
        "trading.Order",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="fills",
        help_text="The order this fill belongs to (empty for trades recorded by hand).",
    )
    execution_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="The broker's id of this execution; (order, execution_id) is unique, so a "
        "fill reported twice is applied once.",
    )

    class Meta:
        db_table = "trades"
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["symbol", "-timestamp"], name="trades_symbol_time_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "execution_id"],
                condition=Q(order__isnull=False),
                name="trades_order_execution_uniq",
            ),
            models.CheckConstraint(
                condition=Q(order__isnull=True) | ~Q(execution_id=""),
                name="trades_order_fill_has_execution_id",
            ),
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
    average_price = PriceField(
        default=0,
        max_digits=18,
        decimal_places=4,
        help_text="Weighted average buy price of the shares held, fees excluded.",
    )
    cost_basis = MoneyField(
        default=0,
        help_text="What the shares held cost: buy amounts plus buy commissions, reduced "
        "pro rata on sells. Realized and unrealized PnL are measured against it.",
    )
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
            models.CheckConstraint(
                condition=Q(cost_basis__gte=0) & (Q(quantity__gt=0) | Q(cost_basis=0)),
                name="positions_cost_basis_valid",
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


# --- Strategies and signals ------------------------------------------------------------------


class Strategy(models.Model):
    """A configured strategy: a registered class (trading/strategies) with its parameters."""

    name = models.SlugField(max_length=64, unique=True, help_text="Unique; recorded on trades.")
    kind = models.CharField(
        max_length=64, help_text="The registered strategy class (trading.strategies.registry)."
    )
    parameters = models.JSONField(
        default=dict, blank=True, help_text="Validated against the class's declared parameters."
    )
    symbols = ArrayField(SymbolField(), default=list, blank=True)
    interval = models.CharField(max_length=3, default="1m")
    enabled = models.BooleanField(default=False)
    capital_allocation = MoneyField(help_text="KRW this strategy may have invested at once.")
    disabled_reason = models.TextField(
        blank=True, help_text="Why the engine disabled it (an exception), empty otherwise."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "strategies"
        ordering = ["name"]
        verbose_name_plural = "strategies"
        constraints = [
            models.CheckConstraint(
                condition=Q(capital_allocation__gt=0), name="strategies_allocation_gt_0"
            ),
            models.CheckConstraint(
                condition=Q(interval__in=["1m", "5m", "15m", "1h", "1d"]),
                name="strategies_interval_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class SignalOutcome(models.TextChoices):
    PENDING = "PENDING", "Pending (no order yet)"
    ORDERED = "ORDERED", "Order placed"
    SKIPPED = "SKIPPED", "Skipped"


class Signal(models.Model):
    """What a strategy asked for on one candle. At most one per (strategy, symbol, interval,
    time): a replayed candle never makes a second signal, and so never a second order."""

    strategy = models.ForeignKey(Strategy, on_delete=models.PROTECT, related_name="signals")
    symbol = models.ForeignKey(
        "marketdata.Stock", on_delete=models.PROTECT, db_column="symbol", related_name="+"
    )
    interval = models.CharField(max_length=3)
    time = models.DateTimeField(help_text="Open time of the candle the signal was made on.")
    action = models.CharField(max_length=4, choices=Side.choices)
    confidence = RatioField(default=1, help_text="0..1.")
    price = PriceField(help_text="The close the signal was made at.")
    quantity = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Asked by the strategy; empty = sized by the orders engine.",
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(
        max_length=8, choices=SignalOutcome.choices, default=SignalOutcome.PENDING
    )
    outcome_reason = models.TextField(blank=True)

    class Meta:
        db_table = "signals"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(outcome="PENDING"),
                name="signals_pending_idx",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["strategy", "symbol", "interval", "time"], name="signals_candle_uniq"
            ),
            models.CheckConstraint(
                condition=Q(action__in=Side.values), name="signals_action_valid"
            ),
            models.CheckConstraint(
                condition=Q(confidence__gte=0) & Q(confidence__lte=1),
                name="signals_confidence_0_1",
            ),
            models.CheckConstraint(condition=Q(price__gt=0), name="signals_price_gt_0"),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True) | Q(quantity__gt=0),
                name="signals_quantity_gt_0",
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=SignalOutcome.values), name="signals_outcome_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.strategy_id}: {self.action} {self.symbol_id} @ {self.price}"


# --- Orders --------------------------------------------------------------------------------


class OrderStatus(models.TextChoices):
    NEW = "NEW", "New"
    SUBMITTED = "SUBMITTED", "Submitted"
    ACCEPTED = "ACCEPTED", "Accepted"
    PARTIALLY_FILLED = "PARTIALLY_FILLED", "Partially filled"
    FILLED = "FILLED", "Filled"
    CANCEL_PENDING = "CANCEL_PENDING", "Cancel pending"
    CANCELED = "CANCELED", "Canceled"
    REJECTED = "REJECTED", "Rejected (by the broker)"
    DENIED = "DENIED", "Denied (by our checks)"
    EXPIRED = "EXPIRED", "Expired"


class Order(models.Model):
    """One order. Its status changes only through trading.states (the one place that knows
    the legal transitions) and every change is recorded as an OrderTransition."""

    client_order_id = models.CharField(
        max_length=64, unique=True, help_text="Our id, also the idempotency key of the API."
    )
    broker = models.CharField(max_length=16, default="paper")
    broker_order_id = models.CharField(max_length=64, blank=True)
    strategy = models.ForeignKey(
        Strategy, on_delete=models.PROTECT, null=True, blank=True, related_name="orders"
    )
    signal = models.OneToOneField(
        Signal, on_delete=models.PROTECT, null=True, blank=True, related_name="order"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="orders",
        help_text="The API user who placed it (empty for strategy orders).",
    )
    symbol = models.ForeignKey(
        "marketdata.Stock", on_delete=models.PROTECT, db_column="symbol", related_name="orders"
    )
    side = models.CharField(max_length=4, choices=Side.choices)
    order_type = models.CharField(max_length=6, choices=OrderType.choices)
    quantity = models.PositiveIntegerField()
    limit_price = PriceField(null=True, blank=True)
    filled_quantity = models.PositiveIntegerField(default=0)
    average_fill_price = PriceField(null=True, blank=True, max_digits=18, decimal_places=4)
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.NEW, db_index=True
    )
    reason = models.TextField(blank=True, help_text="Why it was denied, rejected or canceled.")
    reason_code = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    last_fill_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="When it reached a final status."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "orders"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["symbol", "-created_at"], name="orders_symbol_time_idx"),
            models.Index(fields=["-created_at"], name="orders_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="orders_quantity_gt_0"),
            models.CheckConstraint(
                condition=Q(filled_quantity__gte=0) & Q(filled_quantity__lte=F("quantity")),
                name="orders_filled_within_quantity",
            ),
            models.CheckConstraint(condition=Q(side__in=Side.values), name="orders_side_valid"),
            models.CheckConstraint(
                condition=Q(order_type__in=OrderType.values), name="orders_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=OrderStatus.values), name="orders_status_valid"
            ),
            models.CheckConstraint(
                # IS NOT NULL spelled out: NULL > 0 is NULL, and a NULL CHECK passes.
                condition=(
                    Q(order_type="LIMIT") & Q(limit_price__isnull=False) & Q(limit_price__gt=0)
                )
                | (Q(order_type="MARKET") & Q(limit_price__isnull=True)),
                name="orders_limit_price_iff_limit",
            ),
            models.CheckConstraint(
                condition=~Q(status="FILLED") | Q(filled_quantity=F("quantity")),
                name="orders_filled_means_all",
            ),
            models.CheckConstraint(
                condition=Q(filled_quantity=0)
                | (Q(average_fill_price__isnull=False) & Q(average_fill_price__gt=0)),
                name="orders_fill_has_average_price",
            ),
            models.CheckConstraint(
                condition=~Q(client_order_id=""), name="orders_client_order_id_not_blank"
            ),
            models.UniqueConstraint(
                fields=["broker", "broker_order_id"],
                condition=~Q(broker_order_id=""),
                name="orders_broker_order_id_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id}: {self.side} {self.quantity} {self.symbol_id}"

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity


class OrderTransition(models.Model):
    """One status change of an order (the order's history; never edited)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=16, blank=True, help_text="Empty on creation.")
    to_status = models.CharField(max_length=16, choices=OrderStatus.choices)
    at = models.DateTimeField()
    actor = models.CharField(max_length=64, help_text="Who made it: engine, broker or user.")
    reason = models.TextField(blank=True)
    filled_quantity = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "order_transitions"
        ordering = ["order", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(to_status__in=OrderStatus.values),
                name="order_transitions_to_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order_id}: {self.from_status or '-'} -> {self.to_status}"


class Account(models.Model):
    """Cash at one broker (KRW). The paper broker's cash lives here; fills change it in the
    same transaction as their trade and position."""

    broker = models.CharField(max_length=16, unique=True)
    cash = MoneyField(help_text="Cash balance in KRW (fills change it; T+2 ignored).")
    initial_cash = MoneyField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "accounts"
        ordering = ["broker"]
        constraints = [
            models.CheckConstraint(
                condition=Q(initial_cash__gte=0), name="accounts_initial_cash_gte_0"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broker}: {self.cash} KRW"


# --- Reconciliation with a broker ------------------------------------------------------------


class BrokerSyncStatus(models.TextChoices):
    AGREED = "AGREED", "Agreed"
    DISAGREED = "DISAGREED", "Disagreed"
    UNREACHABLE = "UNREACHABLE", "Broker unreachable"


class BrokerSync(models.Model):
    """The last reconciliation with one broker (trading.broker_sync): whether our orders, fills
    and positions agree with the broker's, the report, and an operator's override. While it
    does not agree (and is not overridden) no new order is sent to that broker."""

    broker = models.CharField(max_length=16, unique=True)
    status = models.CharField(max_length=12, choices=BrokerSyncStatus.choices)
    checked_at = models.DateTimeField()
    reason = models.TextField(blank=True, help_text="What disagrees (empty when agreed).")
    report = models.JSONField(default=dict, blank=True)
    override_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The operator who allowed trading despite the disagreement.",
    )
    override_at = models.DateTimeField(null=True, blank=True)
    override_note = models.TextField(blank=True)

    class Meta:
        db_table = "broker_sync"
        ordering = ["broker"]
        verbose_name = "broker reconciliation"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=BrokerSyncStatus.values), name="broker_sync_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(override_at__isnull=True) | Q(override_by__isnull=False),
                name="broker_sync_override_has_operator",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broker}: {self.status}"
