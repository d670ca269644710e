"""Candle aggregation: bucket boundaries, session edges, late ticks, advance(). Pure: no I/O."""

import datetime as dt
import json
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.aggregation import (
    AggregationError,
    CandleAggregator,
    Sessions,
    check_intervals,
)
from marketdata.types import Candle

SEOUL = krx.SEOUL
DAY = (2026, 3, 4)  # a Wednesday, a KRX trading day
NEXT_DAY = (2026, 3, 5)


def kst(hour, minute, second=0, micro=0, day=DAY) -> dt.datetime:
    return dt.datetime(*day, hour, minute, second, micro, tzinfo=SEOUL)


@pytest.fixture(scope="module")
def sessions():
    return Sessions()


@pytest.fixture
def agg(sessions):
    return CandleAggregator(("1m", "5m", "15m", "1h", "1d"), close_grace=2, sessions=sessions)


def push(agg, when: dt.datetime, price: int, volume: int = 10, symbol="005930"):
    t = when.timestamp()
    kind, _, second = agg.sessions.classify(t)
    return agg.add(symbol, t, price, volume, kind, second)


def ohlcv(candle: Candle):
    return (candle.open, candle.high, candle.low, candle.close, candle.volume)


def by_interval(candles):
    return {c.interval: c for c in candles}


def test_a_tick_in_the_next_minute_closes_the_minute_candle(agg):
    assert push(agg, kst(9, 0, 10), 70000, 5) == []
    assert push(agg, kst(9, 0, 30), 70300, 7) == []
    assert push(agg, kst(9, 0, 59, 999999), 69900, 3) == []
    [closed] = push(agg, kst(9, 1, 0), 70100, 1)
    assert closed.interval == "1m"
    assert closed.time == kst(9, 0).astimezone(dt.UTC)
    assert ohlcv(closed) == (70000, 70300, 69900, 69900, 15)
    assert all(isinstance(p, Decimal) for p in ohlcv(closed)[:4])
    assert agg.bars["005930"][1].volume == 16  # the 5m candle goes on


def test_the_hour_boundary_closes_1m_5m_15m_and_1h_but_not_the_day(agg):
    push(agg, kst(9, 59, 59), 70000)
    closed = by_interval(push(agg, kst(10, 0, 0), 70100))
    assert set(closed) == {"1m", "5m", "15m", "1h"}
    assert closed["5m"].time == kst(9, 55).astimezone(dt.UTC)
    assert closed["15m"].time == kst(9, 45).astimezone(dt.UTC)
    assert closed["1h"].time == kst(9, 0).astimezone(dt.UTC)


def test_five_minute_buckets_are_aligned_on_the_kst_clock(agg):
    push(agg, kst(9, 4, 59), 70000)
    assert [c.interval for c in push(agg, kst(9, 5, 0), 70000)] == ["1m", "5m"]
    assert push(agg, kst(9, 9, 0), 70000)[0].interval == "1m"


def test_the_daily_candle_is_the_kst_day_and_the_next_day_closes_it(agg):
    push(agg, kst(9, 0, 0), 70000, 100)
    push(agg, kst(15, 19, 0), 71000, 50)
    closed = by_interval(push(agg, kst(9, 0, 0, day=NEXT_DAY), 71500))
    daily = closed["1d"]
    assert daily.time == dt.datetime(*DAY, tzinfo=SEOUL).astimezone(dt.UTC)
    assert daily.time.isoformat() == "2026-03-03T15:00:00+00:00"
    assert ohlcv(daily) == (70000, 71000, 70000, 71000, 150)
    # The new day's quote starts from yesterday's regular close.
    assert agg.quotes["005930"].prev_close == 71000


def test_before_the_open_no_intraday_candle_and_the_open_print_starts_the_day(agg):
    push(agg, kst(8, 35, 0), 69000, 40)  # pre-market closing-price trade
    assert all(bar is None for bar in agg.bars["005930"])
    push(agg, kst(9, 0, 0), 70000, 5)
    bars = dict(zip(agg.intervals, agg.bars["005930"], strict=True))
    assert bars["1m"].start == kst(9, 0).timestamp()
    assert bars["1m"].volume == 5
    # The pre-market volume counts in the day, not in its open/high/low/close.
    daily = bars["1d"]
    assert (daily.open, daily.low, daily.volume) == (70000, 70000, 45)


def test_the_closing_auction_print_goes_into_the_last_regular_candle(agg):
    push(agg, kst(15, 19, 30), 70000, 5)
    closed = push(agg, kst(15, 30, 0), 70500, 900)  # the closing auction print
    assert sorted((c.interval, c.time) for c in closed) == [
        ("1m", kst(15, 19).astimezone(dt.UTC)),
        ("5m", kst(15, 15).astimezone(dt.UTC)),
    ]
    bars = dict(zip(agg.intervals, agg.bars["005930"], strict=True))
    assert bars["1m"].start == kst(15, 29).timestamp()
    assert (bars["1m"].open, bars["1m"].close, bars["1m"].volume) == (70500, 70500, 900)
    assert bars["5m"].start == kst(15, 25).timestamp()
    assert bars["15m"].start == kst(15, 15).timestamp()
    assert bars["1h"].start == kst(15, 0).timestamp()
    assert (bars["1h"].close, bars["1h"].volume) == (70500, 905)
    assert bars["1d"].close == 70500
    # No 15:30 candle exists, and the last candles end at the close (+ grace).
    closed = agg.advance(kst(15, 30, 2).timestamp())
    assert {c.interval for c in closed} == {"1m", "5m", "15m", "1h"}
    assert max(c.time for c in closed) == kst(15, 29).astimezone(dt.UTC)


def test_after_hours_prints_change_the_quote_and_day_volume_not_the_candles(agg):
    push(agg, kst(15, 30, 0), 70500, 900)
    agg.advance(kst(15, 31).timestamp())
    assert push(agg, kst(16, 10, 0), 71000, 30) == []
    bars = dict(zip(agg.intervals, agg.bars["005930"], strict=True))
    assert bars["1m"] is None and bars["1h"] is None
    assert (bars["1d"].close, bars["1d"].high, bars["1d"].volume) == (70500, 70500, 930)
    quote = agg.quotes["005930"]
    assert (quote.close, quote.high, quote.volume, quote.regular_close) == (
        71000,
        70500,
        930,
        70500,
    )
    # The day's candle closes at 18:00 KST (+ grace), after the last after-hours print.
    assert agg.advance(kst(17, 59, 59).timestamp()) == []
    [daily] = agg.advance(kst(18, 0, 2).timestamp())
    assert daily.interval == "1d"


def test_a_late_tick_inside_the_open_candle_updates_high_low_volume_not_close(agg):
    push(agg, kst(9, 0, 10), 70000, 1)
    push(agg, kst(9, 0, 40), 70100, 1)
    push(agg, kst(9, 0, 20), 69000, 4)  # older than the last tick: late
    bar = agg.bars["005930"][0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (70000, 70100, 69000, 70100, 6)
    push(agg, kst(9, 0, 30), 72000, 1)
    bar = agg.bars["005930"][0]  # read again: ticks are merged into the bars when they are read
    assert (bar.high, bar.close) == (72000, 70100)
    assert agg.quotes["005930"].close == 70100  # nor the quote's last price


def test_a_tick_for_a_closed_bucket_is_counted_and_dropped_where_closed(agg):
    push(agg, kst(9, 0, 10), 70000, 1)
    push(agg, kst(9, 1, 5), 70100, 1)  # closes the 09:00 minute
    assert push(agg, kst(9, 0, 50), 75000, 9) == []
    assert agg.late_dropped == {"1m": 1, "5m": 0, "15m": 0, "1h": 0, "1d": 0}
    one_minute = agg.bars["005930"][0]
    assert (one_minute.start, one_minute.high, one_minute.volume) == (
        kst(9, 1).timestamp(),
        70100,
        1,
    )
    assert agg.bars["005930"][1].high == 75000  # the 5m bucket is still open: it counts there
    # Also after advance() closed it with no open candle left for the interval:
    agg.advance(kst(9, 2, 3).timestamp())
    push(agg, kst(9, 1, 30), 70000, 1)
    assert agg.late_dropped["1m"] == 2


def test_advance_closes_candles_of_illiquid_symbols_only_after_the_grace(agg):
    push(agg, kst(9, 3, 10), 70000, 1, symbol="000660")
    push(agg, kst(9, 3, 20), 5000, 1, symbol="035720")
    assert agg.advance(kst(9, 4, 1).timestamp()) == []  # the bucket ended 1 s ago, grace 2 s
    closed = agg.advance(kst(9, 4, 2).timestamp())
    assert sorted((c.symbol, c.interval) for c in closed) == [("000660", "1m"), ("035720", "1m")]
    assert agg.advance(kst(9, 4, 30).timestamp()) == []  # nothing closes twice
    closed = agg.advance(kst(10, 0, 2).timestamp())
    assert sorted(c.interval for c in closed) == ["15m", "15m", "1h", "1h", "5m", "5m"]
    assert agg.candles_closed == 8


def test_drain_coalesces_to_one_write_per_touched_list(agg):
    for second in range(0, 50, 10):
        push(agg, kst(9, 0, second), 70000 + second * 10, 1)
    lists, quotes = agg.drain()
    assert len(lists) == 5 and set(quotes) == {"005930"}
    assert all(not w.closed and w.open is not None for w in lists)
    push(agg, kst(9, 1, 0), 70000, 1)
    lists, _ = agg.drain()
    minute = next(w for w in lists if w.interval == "1m")
    assert [b.start for b in minute.closed] == [kst(9, 0).timestamp()]
    assert minute.open.start == kst(9, 1).timestamp()
    assert agg.drain() == ([], {})


def test_bar_json_is_the_candle_contract_byte_for_byte(agg):
    push(agg, kst(9, 0, 10), 70000, 12)
    push(agg, kst(9, 0, 20), 70100, 3)
    bar = agg.bars["005930"][0]
    candle = bar.candle("005930", "1m")
    assert bar.json("1m") == candle.to_json()
    assert json.loads(bar.json("1m"))["timestamp"] == "2026-03-04T00:00:00Z"


def test_intervals_are_checked_and_ordered():
    assert check_intervals(["1d", "1m", "1h"]) == ("1m", "1h", "1d")
    with pytest.raises(AggregationError, match="'2m'"):
        check_intervals(["1m", "2m"])


def test_configured_intervals_read_the_setting(settings):
    from marketdata.aggregation import configured_intervals

    settings.CANDLE_INTERVALS = "1m, 3m,1d"
    assert configured_intervals() == ("1m", "3m", "1d")


def test_sessions_classify_the_edges(sessions):
    from marketdata.aggregation import AUCTION, EXTENDED, OUTSIDE, REGULAR

    kinds = {
        (8, 29, 59): OUTSIDE,
        (8, 30, 0): EXTENDED,
        (8, 59, 59): EXTENDED,
        (9, 0, 0): REGULAR,
        (15, 29, 59): REGULAR,
        (15, 30, 0): AUCTION,
        (15, 39, 59): AUCTION,
        (15, 40, 0): EXTENDED,
        (17, 59, 59): EXTENDED,
        (18, 0, 0): OUTSIDE,
    }
    for (h, m, s), kind in kinds.items():
        assert sessions.classify(kst(h, m, s).timestamp())[0] == kind, (h, m, s)
    saturday = dt.datetime(2026, 3, 7, 10, 0, tzinfo=SEOUL)
    assert sessions.classify(saturday.timestamp())[0] == OUTSIDE
