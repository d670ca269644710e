from decimal import Decimal

from rest_framework import serializers

from marketdata.models import MarketData, Stock
from qbsite.serializers import AwareDateTimeField, RejectUnknownFieldsMixin


class StockSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    class Meta:
        model = Stock
        fields = [
            "symbol",
            "name",
            "sector",
            "market",
            "market_cap",
            "shares_outstanding",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]
        extra_kwargs = {
            "market_cap": {"min_value": 0},
            "shares_outstanding": {"min_value": 0},
        }

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            # The symbol is the key: a stock is never renamed to another code.
            fields["symbol"].read_only = True
        return fields


class PriceField(serializers.DecimalField):
    default_error_messages = {"not_positive": "Must be greater than 0."}

    def __init__(self, **kwargs):
        super().__init__(max_digits=14, decimal_places=2, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value <= 0:
            self.fail("not_positive")
        return value


class CandleSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    """One candle. Checks each field, then the OHLC relations, naming the field at fault."""

    time = AwareDateTimeField(help_text="Candle open time, ISO 8601 with a timezone.")
    open = PriceField()
    high = PriceField()
    low = PriceField()
    close = PriceField()
    volume = serializers.IntegerField(min_value=0, max_value=2**63 - 1)

    class Meta:
        model = MarketData
        fields = ["symbol", "interval", "time", "open", "high", "low", "close", "volume"]
        extra_kwargs = {"symbol": {"help_text": "KRX short code, e.g. 005930."}}

    def get_fields(self):
        fields = super().get_fields()
        # Model TextFields come out as multi-line text inputs: these are short codes.
        fields["symbol"].style = {}
        return fields

    def validate(self, attrs):
        errors: dict[str, list[str]] = {}
        high: Decimal = attrs["high"]
        low: Decimal = attrs["low"]
        if high < low:
            errors.setdefault("high", []).append(f"high {high} is below low {low}.")
        for name in ("open", "close"):
            if attrs[name] > high:
                errors.setdefault("high", []).append(f"high {high} is below {name} {attrs[name]}.")
            if attrs[name] < low:
                errors.setdefault("low", []).append(f"low {low} is above {name} {attrs[name]}.")
        if errors:
            raise serializers.ValidationError(errors)
        return attrs
