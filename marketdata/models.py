from django.db import models
from django.db.models import F, Q
from timescale.db.models.managers import TimescaleManager

from qbsite.fields import SYMBOL_REGEX, PriceField, SymbolField


class Market(models.TextChoices):
    KOSPI = "KOSPI", "KOSPI"
    KOSDAQ = "KOSDAQ", "KOSDAQ"
    KONEX = "KONEX", "KONEX"
    ETF = "ETF", "ETF"


class Interval(models.TextChoices):
    M1 = "1m", "1 minute"
    M3 = "3m", "3 minutes"
    M5 = "5m", "5 minutes"
    M10 = "10m", "10 minutes"
    M15 = "15m", "15 minutes"
    M30 = "30m", "30 minutes"
    H1 = "1h", "1 hour"
    D1 = "1d", "1 day"
    W1 = "1w", "1 week"
    MO1 = "1mo", "1 month"


class Stock(models.Model):
    """A listed instrument (stocks_metadata)."""

    symbol = SymbolField(primary_key=True, help_text="KRX short code, e.g. 005930.")
    name = models.CharField(max_length=100)
    sector = models.CharField(max_length=100, blank=True, db_index=True)
    market = models.CharField(max_length=6, choices=Market.choices)
    market_cap = models.BigIntegerField(null=True, blank=True, help_text="KRW.")
    shares_outstanding = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "stocks_metadata"
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(
                condition=Q(symbol__regex=SYMBOL_REGEX), name="stocks_metadata_symbol_format"
            ),
            models.CheckConstraint(
                condition=Q(market__in=Market.values), name="stocks_metadata_market_valid"
            ),
            models.CheckConstraint(
                condition=Q(market_cap__isnull=True) | Q(market_cap__gte=0),
                name="stocks_metadata_market_cap_gte_0",
            ),
            models.CheckConstraint(
                condition=Q(shares_outstanding__isnull=True) | Q(shares_outstanding__gte=0),
                name="stocks_metadata_shares_gte_0",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.name}"


class MarketData(models.Model):
    """One candle (market_data). A TimescaleDB hypertable where the extension exists.

    The primary key is (symbol, interval, time): the archiver's idempotent upsert relies on it.
    `symbol` is not a foreign key: history may be loaded before its metadata, and a hypertable
    insert path should not pay a lookup per row. Columns are `text` (TimescaleDB prefers it).
    """

    pk = models.CompositePrimaryKey("symbol", "interval", "time")
    time = models.DateTimeField(help_text="Candle open time (UTC).")
    symbol = models.TextField(validators=SymbolField().validators)
    interval = models.TextField(choices=Interval.choices)
    open = PriceField()
    high = PriceField()
    low = PriceField()
    close = PriceField()
    volume = models.BigIntegerField()

    objects = TimescaleManager()

    class Meta:
        db_table = "market_data"
        verbose_name = "market data"
        verbose_name_plural = "market data"
        indexes = [models.Index(fields=["-time"], name="market_data_time_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(high__gte=F("low")), name="market_data_high_gte_low"
            ),
            models.CheckConstraint(
                condition=Q(open__gt=0) & Q(high__gt=0) & Q(low__gt=0) & Q(close__gt=0),
                name="market_data_prices_gt_0",
            ),
            models.CheckConstraint(
                condition=Q(high__gte=F("open"))
                & Q(high__gte=F("close"))
                & Q(low__lte=F("open"))
                & Q(low__lte=F("close")),
                name="market_data_ohlc_within_range",
            ),
            models.CheckConstraint(condition=Q(volume__gte=0), name="market_data_volume_gte_0"),
            models.CheckConstraint(
                condition=Q(symbol__regex=SYMBOL_REGEX), name="market_data_symbol_format"
            ),
            models.CheckConstraint(
                condition=Q(interval__in=Interval.values), name="market_data_interval_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval} {self.time:%Y-%m-%d %H:%M}"


class MarketDataRow(models.Model):
    """market_data as the admin sees it: an unmanaged, read-only stand-in over the same table.

    Django 5.2's admin refuses models with a composite primary key (AdminSite.register), and
    MarketData's (symbol, interval, time) key is what the archiver's upsert relies on, so the
    admin gets this model instead: same table, no migration touches the table through it.
    Django needs one primary-key field, so `time` is declared as one, but it is NOT unique on
    its own: never look rows up by `pk`. The admin names a row by (symbol, interval, time)
    (marketdata/admin.py) and never writes.
    """

    time = models.DateTimeField(primary_key=True, help_text="Candle open time (UTC).")
    symbol = models.TextField()
    interval = models.TextField(choices=Interval.choices)
    open = PriceField()
    high = PriceField()
    low = PriceField()
    close = PriceField()
    volume = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "market_data"
        verbose_name = "market data"
        verbose_name_plural = "market data"
        # The real key, for a deterministic order (pages must neither skip nor repeat rows).
        ordering = ["-time", "symbol", "interval"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval} {self.time:%Y-%m-%d %H:%M}"
