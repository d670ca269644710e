from decimal import Decimal

from rest_framework import serializers

from marketdata.models import Stock
from qbsite.fields import SYMBOL_REGEX, MoneyField
from qbsite.serializers import RejectUnknownFieldsMixin
from trading.models import (
    Account,
    Order,
    OrderTransition,
    OrderType,
    Position,
    Side,
    StrategyPerformance,
    Trade,
)

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
            "order",
            "execution_id",
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
            "cost_basis",
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


# --- orders ----------------------------------------------------------------------------------

# The orders engine names its orders after their signal (trading.oms.signal_client_order_id);
# an API order holding such an id would be taken for the signal's order.
RESERVED_CLIENT_ID_PREFIX = "sig-"
CLIENT_ORDER_ID_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_QUANTITY = 2_147_483_647  # the column's limit; the checks refuse what cash cannot pay


class OrderCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """What a client sends to place an order. Prices are decimal strings ("70100"); JSON
    numbers are read through their text, so 70100 and 70100.5 are exact too. NaN, Infinity,
    negative or zero prices, fractional quantities and unknown fields are 400s naming the field.
    """

    client_order_id = serializers.RegexField(
        CLIENT_ORDER_ID_REGEX,
        max_length=64,
        help_text="Your id for this order, unique: the idempotency key. Sending the same"
        " request again returns the same order (200); the same id with other terms is a 409."
        " 1-64 characters: letters, digits and . _ : - (not starting with one of those"
        f" symbols); the prefix {RESERVED_CLIENT_ID_PREFIX!r} is reserved for strategy orders.",
        error_messages={
            "invalid": "Use 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter"
            " or digit."
        },
    )
    symbol = serializers.RegexField(
        SYMBOL_REGEX,
        help_text="KRX short code, e.g. 005930.",
        error_messages={"invalid": "A KRX symbol is six digits or capital letters, e.g. 005930."},
    )
    side = serializers.ChoiceField(choices=Side.choices)
    order_type = serializers.ChoiceField(choices=OrderType.choices)
    quantity = serializers.IntegerField(
        min_value=1, max_value=MAX_QUANTITY, help_text="Whole shares (the KRX lot is 1)."
    )
    limit_price = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        allow_null=True,
        help_text="KRW, on the KRX tick grid; required for LIMIT, absent or null for MARKET.",
    )

    def validate_client_order_id(self, value: str) -> str:
        if value.startswith(RESERVED_CLIENT_ID_PREFIX):
            raise serializers.ValidationError(
                f"The prefix {RESERVED_CLIENT_ID_PREFIX!r} is reserved for strategy orders."
            )
        return value

    def validate_symbol(self, value: str) -> str:
        if not Stock.objects.filter(symbol=value).exists():
            raise serializers.ValidationError(f"Unknown symbol {value}: not in the stock list.")
        return value

    def validate_limit_price(self, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise serializers.ValidationError("Must be greater than 0.")
        return value

    def validate(self, attrs):
        price = attrs.get("limit_price")
        if attrs["order_type"] == OrderType.LIMIT and price is None:
            raise serializers.ValidationError({"limit_price": ["A LIMIT order needs a price."]})
        if attrs["order_type"] == OrderType.MARKET and price is not None:
            raise serializers.ValidationError(
                {"limit_price": ["A MARKET order takes no price; leave it out or null."]}
            )
        attrs.setdefault("limit_price", None)
        return attrs


class OrderCancelSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="Recorded with the cancel."
    )


class OrderTransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderTransition
        fields = ["from_status", "to_status", "at", "actor", "reason", "filled_quantity"]
        read_only_fields = fields


class OrderFillSerializer(serializers.ModelSerializer):
    class Meta:
        model = Trade
        fields = [
            "id",
            "execution_id",
            "timestamp",
            "quantity",
            "price",
            "commission",
            "tax",
            "profit_loss",
            "status",
        ]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    strategy = serializers.SlugRelatedField(
        slug_field="name", read_only=True, help_text="The strategy that placed it, or null."
    )
    user = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="The API user who placed it, or null."
    )
    remaining_quantity = serializers.IntegerField(read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "client_order_id",
            "broker",
            "broker_order_id",
            "strategy",
            "signal",
            "user",
            "symbol",
            "side",
            "order_type",
            "quantity",
            "limit_price",
            "filled_quantity",
            "remaining_quantity",
            "average_fill_price",
            "status",
            "reason_code",
            "reason",
            "created_at",
            "submitted_at",
            "accepted_at",
            "last_fill_at",
            "closed_at",
            "updated_at",
        ]
        read_only_fields = fields


class OrderDetailSerializer(OrderSerializer):
    transitions = OrderTransitionSerializer(many=True, read_only=True)
    fills = OrderFillSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "transitions", "fills"]
        read_only_fields = fields


class AccountSerializer(serializers.ModelSerializer):
    class Meta:
        model = Account
        fields = ["broker", "cash", "initial_cash", "updated_at"]
        read_only_fields = fields
