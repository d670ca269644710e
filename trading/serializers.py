from rest_framework import serializers

from qbsite.fields import MoneyField
from trading.models import Position, StrategyPerformance, Trade

_money = MoneyField()


class TradeSerializer(serializers.ModelSerializer):
    amount = serializers.DecimalField(
        max_digits=_money.max_digits,
        decimal_places=_money.decimal_places,
        read_only=True,
        help_text="price x quantity, before commission and tax.",
    )

    class Meta:
        model = Trade
        fields = [
            "id",
            "timestamp",
            "symbol",
            "side",
            "quantity",
            "price",
            "amount",
            "commission",
            "tax",
            "strategy",
            "order_type",
            "status",
            "profit_loss",
        ]
        read_only_fields = fields


class PositionSerializer(serializers.ModelSerializer):
    market_value = serializers.DecimalField(
        max_digits=_money.max_digits,
        decimal_places=_money.decimal_places,
        read_only=True,
        help_text="quantity x current price (the average price while no quote is known).",
    )

    class Meta:
        model = Position
        fields = [
            "symbol",
            "quantity",
            "average_price",
            "current_price",
            "market_value",
            "unrealized_pnl",
            "realized_pnl",
            "updated_at",
        ]
        read_only_fields = fields


class StrategyPerformanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = StrategyPerformance
        fields = [
            "id",
            "strategy",
            "date",
            "total_return",
            "trades_count",
            "win_rate",
            "max_drawdown",
            "sharpe_ratio",
        ]
        read_only_fields = fields
