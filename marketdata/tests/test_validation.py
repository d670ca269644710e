"""Tick validation: each bad tick is rejected with its reason; logging is rate-limited."""

import datetime as dt
import logging
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.aggregation import CandleAggregator, Sessions, kst_day
from marketdata.models import Stock
from marketdata.types import Tick
from marketdata.validation import SymbolInfo, TickValidator, load_symbols
from ops.models import SystemLog

SEOUL = krx.SEOUL
NOW = dt.datetime(2026, 3, 4, 10, 0, tzinfo=SEOUL)
SYMBOLS = {"005930": SymbolInfo("stock", "KOSPI"), "069500": SymbolInfo("etf", "ETF")}


@pytest.fixture(scope="module")
def sessions():
    return Sessions()


@pytest.fixture
def agg(sessions):
    aggregator = CandleAggregator(sessions=sessions)
    aggregator.set_prev_close("005930", kst_day(NOW.timestamp()), 70000)
    return aggregator


def tick(symbol="005930", when=NOW, price=Decimal(70000), volume=1):
    return Tick(symbol, when, price, volume)


@pytest.mark.parametrize(
    ("bad", "reason", "words"),
    [
        (tick(symbol="999999"), "unknown_symbol", "'999999' is not in stocks_metadata"),
        (tick(when=dt.datetime(2026, 3, 4, 10, 0)), "time_not_aware", "no time zone"),
        (tick(when=NOW + dt.timedelta(seconds=6)), "time_in_future", "6.0 s after the feed clock"),
        (tick(when=NOW.replace(hour=8)), "outside_trading_hours", "outside KRX trading hours"),
        (tick(when=NOW - dt.timedelta(days=1)), "before_trading_day", "before the current"),
        (tick(volume=-1), "volume_invalid", "volume -1"),
        (tick(volume=1.5), "volume_invalid", "volume 1.5"),
        (tick(price=Decimal(0)), "price_invalid", "price Decimal('0')"),
        (tick(price=70000.0), "price_invalid", "price 70000.0"),
        (tick(price=Decimal(70050)), "price_off_tick_grid", "tick at that price: 100"),
        (tick(price=Decimal("70000.5")), "price_off_tick_grid", "not on the KRX tick grid"),
        (tick(price=Decimal(91100)), "price_outside_daily_limit", "49000..91000"),
        (tick(symbol="069500", price=Decimal(1002)), "price_off_tick_grid", "etf tick"),
    ],
)
def test_a_bad_tick_is_rejected_with_its_reason(agg, bad, reason, words, caplog):
    validator = TickValidator(SYMBOLS)
    with caplog.at_level(logging.WARNING, logger="qb.collector"):
        assert validator.check(bad, NOW.timestamp(), agg) is None
    assert validator.rejected == {reason: 1}
    [record] = caplog.records
    assert words in record.getMessage()
    assert record.metadata["reason"] == reason
    assert record.metadata["symbol"] == bad.symbol


def test_good_ticks_pass_with_int_won_and_their_session(agg):
    validator = TickValidator(SYMBOLS)
    t, won, volume, _kind, _ = validator.check(tick(price=Decimal(91000)), NOW.timestamp(), agg)
    assert (t, won, volume, type(won)) == (NOW.timestamp(), 91000, 1, int)
    assert validator.check(tick(when=NOW + dt.timedelta(seconds=4)), NOW.timestamp(), agg)
    # A Saturday feed clock: Friday is still the current trading day.
    friday = dt.datetime(2026, 3, 6, 15, 0, tzinfo=SEOUL)
    saturday = dt.datetime(2026, 3, 7, 12, 0, tzinfo=SEOUL)
    assert validator.check(tick(when=friday), saturday.timestamp(), agg)


def test_without_a_previous_close_the_band_is_skipped_and_said(sessions, caplog):
    validator = TickValidator(SYMBOLS)
    agg = CandleAggregator(sessions=sessions)
    with caplog.at_level(logging.WARNING, logger="qb.collector"):
        assert validator.check(tick(price=Decimal(500000)), NOW.timestamp(), agg)
        assert validator.check(tick(price=Decimal(400000)), NOW.timestamp(), agg)
    assert validator.band_unchecked == 2
    [record] = caplog.records  # said once per symbol and day
    assert "daily limit is not checked" in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_rejections_reach_system_logs_rate_limited_per_reason(agg):
    clock = [100.0]
    validator = TickValidator(SYMBOLS, log_interval=10, clock=lambda: clock[0])
    for _ in range(5):
        validator.check(tick(price=Decimal(70050)), NOW.timestamp(), agg)
    validator.check(tick(symbol="000000"), NOW.timestamp(), agg)
    clock[0] += 11
    validator.check(tick(price=Decimal(70050)), NOW.timestamp(), agg)
    handler = next(
        h for h in logging.getLogger().handlers if type(h).__name__ == "SystemLogHandler"
    )
    assert handler.flush(timeout=30)
    rows = list(SystemLog.objects.filter(component="qb.collector").order_by("id"))
    assert [(r.level, r.metadata["reason"], r.metadata["suppressed"]) for r in rows] == [
        ("WARNING", "price_off_tick_grid", 0),
        ("WARNING", "unknown_symbol", 0),
        ("WARNING", "price_off_tick_grid", 4),
    ]
    assert rows[0].metadata["tick"]["price"] == "70050"
    assert "4 more like it" in rows[2].message
    assert validator.rejected == {"price_off_tick_grid": 6, "unknown_symbol": 1}
    assert validator.log.suppressed_total == {"price_off_tick_grid": 4}


@pytest.mark.django_db
def test_known_symbols_come_from_stocks_metadata_and_refresh():
    Stock.objects.create(symbol="005930", name="Samsung Electronics", market="KOSPI")
    Stock.objects.create(symbol="069500", name="KODEX 200", market="ETF")
    assert load_symbols() == SYMBOLS
    validator = TickValidator({})
    validator.refresh_symbols()
    assert validator.symbols == SYMBOLS
