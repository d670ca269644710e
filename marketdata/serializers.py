from decimal import Decimal

from rest_framework import serializers

from marketdata.models import Interval, MarketData, Stock
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


# --- Real-time reads (Redis, merged with PostgreSQL for candles) ------------------------------


class CandleSeriesSerializer(CandleSerializer):
    """A candle of /candles/: the /market-data/ shape plus `closed` (False: still building)."""

    closed = serializers.BooleanField(read_only=True)

    class Meta(CandleSerializer.Meta):
        fields = [*CandleSerializer.Meta.fields, "closed"]


class CandleQuerySerializer(serializers.Serializer):
    """The query of /candles/: one series (symbol and interval) and an optional time range."""

    symbol = serializers.RegexField(
        r"^[0-9A-Z]{6}$",
        error_messages={"invalid": "A KRX symbol is six digits or capital letters, e.g. 005930."},
    )
    interval = serializers.ChoiceField(choices=Interval.choices)
    time_after = AwareDateTimeField(required=False, help_text="Inclusive.")
    time_before = AwareDateTimeField(required=False, help_text="Exclusive.")

    def validate(self, attrs):
        after, before = attrs.get("time_after"), attrs.get("time_before")
        if after is not None and before is not None and after >= before:
            raise serializers.ValidationError(
                {"time_before": [f"Must be after time_after ({after.isoformat()})."]}
            )
        return attrs


class QuoteSerializer(serializers.Serializer):
    """The latest quote (`market:{symbol}`); null where the collector does not know yet."""

    symbol = serializers.CharField()
    timestamp = serializers.DateTimeField(allow_null=True)
    open = PriceField(allow_null=True)
    high = PriceField(allow_null=True)
    low = PriceField(allow_null=True)
    close = PriceField(allow_null=True, help_text="The last traded price.")
    volume = serializers.IntegerField(allow_null=True, help_text="The day's volume so far.")
    prev_close = PriceField(allow_null=True)
    change = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    change_rate = serializers.DecimalField(
        max_digits=8, decimal_places=2, allow_null=True, help_text="Percent against prev_close."
    )
    upper_limit = PriceField(allow_null=True)
    lower_limit = PriceField(allow_null=True)


class IndicatorsSerializer(serializers.Serializer):
    """`indicators:{symbol}`: floats, null while warming up."""

    symbol = serializers.CharField()
    sma_20 = serializers.FloatField(allow_null=True)
    rsi = serializers.FloatField(allow_null=True, help_text="RSI 14 (Wilder).")
    macd = serializers.FloatField(allow_null=True, help_text="MACD 12/26.")
    macd_signal = serializers.FloatField(allow_null=True, help_text="Signal line (9).")
    macd_hist = serializers.FloatField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    extra = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="Other fields of the hash."
    )
