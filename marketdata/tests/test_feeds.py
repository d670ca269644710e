"""Feeds: the simulated KRX market (determinism, grid, band, sessions), CSV replay, make_feed
(the KIS feed itself: test_feed_kis.py)."""

import datetime as dt
import logging
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.feeds import FeedError, make_feed, parse_speed
from marketdata.feeds.csv_replay import CSVReplayFeed
from marketdata.feeds.simulated import SimulatedKRXFeed, default_start

SEOUL = krx.SEOUL
SYMBOLS = {"005930": Decimal(70000), "000660": Decimal(1995), "035720": None, "069500": None}
OPEN = dt.datetime(2026, 3, 4, 9, 0, tzinfo=SEOUL)


def sim(seed=7, **options):
    options.setdefault("start", OPEN)
    return SimulatedKRXFeed(
        SYMBOLS, seed=seed, speed="max", instruments={"069500": "etf"}, rate=5, **options
    )


def test_same_seed_same_ticks_other_seed_other_ticks():
    first = sim().take(1000)
    assert len(first) == 1000
    assert sim().take(1000) == first
    assert sim(seed=8).take(1000) != first


def test_prices_on_the_grid_and_within_the_band_volumes_positive():
    feed = sim(start=dt.datetime(2026, 3, 4, 15, 19, 30, tzinfo=SEOUL))
    ticks = feed.take(5000)  # crosses the close into the next trading day
    assert ticks[-1].time.astimezone(SEOUL).date() == dt.date(2026, 3, 5)
    for tick in ticks:
        instrument = "etf" if tick.symbol == "069500" else "stock"
        assert krx.is_on_tick(tick.price, instrument=instrument), tick
        assert tick.volume > 0 and tick.time.tzinfo is not None


def test_no_ticks_outside_sessions_and_a_closing_print_per_symbol():
    feed = sim(start=dt.datetime(2026, 3, 6, 15, 19, 30, tzinfo=SEOUL))  # a Friday
    before = dict(feed.price)
    ticks = feed.take(3000)
    for tick in ticks:
        local = tick.time.astimezone(SEOUL)
        assert krx.is_trading_day(local.date())
        assert dt.time(9, 0) <= local.time() < dt.time(15, 20) or local.time() == dt.time(15, 30)
    closing = [t for t in ticks if t.time.astimezone(SEOUL).time() == dt.time(15, 30)]
    assert sorted(t.symbol for t in closing) == sorted(SYMBOLS)
    monday = [t for t in ticks if t.time.astimezone(SEOUL).date() == dt.date(2026, 3, 9)]
    assert monday and monday[0].time.astimezone(SEOUL).time() == dt.time(9, 0)
    # Monday's band is around Friday's close.
    closes = {t.symbol: t.price for t in closing}
    assert feed.prev_close == {s: int(p) for s, p in closes.items()}
    for tick in ticks:
        day = tick.time.astimezone(SEOUL).date()
        base = before[tick.symbol] if day == dt.date(2026, 3, 6) else closes[tick.symbol]
        instrument = "etf" if tick.symbol == "069500" else "stock"
        assert krx.within_band(tick.price, Decimal(base), instrument=instrument), tick


def test_closed_market_runs_its_own_session_clock():
    saturday = dt.datetime(2026, 3, 7, 3, 0, tzinfo=dt.UTC)
    assert default_start(saturday) == OPEN.replace(day=6).astimezone(dt.UTC)
    early = dt.datetime(2026, 3, 4, 7, 0, tzinfo=SEOUL)  # before Wednesday's open
    assert default_start(early) == OPEN.replace(day=3)
    during = dt.datetime(2026, 3, 4, 11, 0, tzinfo=SEOUL)
    assert default_start(during) == during
    feed = SimulatedKRXFeed(["005930"], wall_clock=lambda: saturday)
    assert feed.now().astimezone(SEOUL).date() == dt.date(2026, 3, 6)


def test_simulated_clock_runs_at_the_speed_factor():
    wall = [1000.0]
    feed = SimulatedKRXFeed(["005930"], speed="10x", start=OPEN, monotonic=lambda: wall[0])
    wall[0] += 3
    assert feed.now() == OPEN + dt.timedelta(seconds=30)


async def test_async_batches_at_max_speed_are_time_ordered():
    feed = sim()
    seen = []
    async for batch in feed.batches():
        seen.extend(batch)
        if len(seen) > 200:
            break
    assert seen == sorted(seen, key=lambda t: t.time)
    assert feed.now() >= seen[-1].time


CSV_TEXT = """time,symbol,price,volume
2026-03-04T09:00:00+09:00,005930,70000,10
2026-03-04T09:00:01.5+09:00,005930,70100,5
not-a-time,005930,70100,5
2026-03-04T09:00:02+09:00,005930,abc,5
2026-03-04T09:00:02+09:00,005930,70200,x
2026-03-04T09:00:02,005930,70200,1
2026-03-04T00:00:03Z,000660,1995,7
2026-03-04T09:00:01+09:00,000660,1995,7
"""


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(CSV_TEXT)
    return path


async def test_csv_replay_full_speed_skips_bad_lines_with_their_numbers(csv_file, caplog):
    feed = CSVReplayFeed(csv_file, speed="max")
    with caplog.at_level(logging.WARNING, logger="qb.collector"):
        ticks = [t async for batch in feed.batches() for t in batch]
    assert [(t.symbol, t.price, t.volume) for t in ticks] == [
        ("005930", Decimal(70000), 10),
        ("005930", Decimal(70100), 5),
        ("000660", Decimal(1995), 7),
    ]
    assert ticks[1].time == dt.datetime(2026, 3, 4, 0, 0, 1, 500000, tzinfo=dt.UTC)
    assert [line for line, _ in feed.bad_lines] == [4, 5, 6, 7, 9]
    reasons = dict(feed.bad_lines)
    assert "not ISO 8601" in reasons[4] and "price 'abc'" in reasons[5]
    assert "volume 'x'" in reasons[6] and "no UTC offset" in reasons[7]
    assert "before the previous line" in reasons[9]
    assert "day.csv line 4 skipped" in caplog.text
    assert feed.symbols == ["000660", "005930"]
    assert feed.now() == ticks[-1].time


async def test_csv_replay_plays_on_the_feed_clock_at_n_times_speed(csv_file):
    wall = [50.0]
    feed = CSVReplayFeed(csv_file, speed=100, monotonic=lambda: wall[0])
    batches = feed.batches()
    first = await anext(batches)
    assert [t.price for t in first] == [Decimal(70000)]
    # The next print is 1.5 s of market time later: at 100x the clock reaches it after 15 ms.
    wall[0] += 0.015
    assert feed.now() == dt.datetime(2026, 3, 4, 0, 0, 1, 500000, tzinfo=dt.UTC)
    await batches.aclose()


def test_speed_and_feed_spec_errors_name_the_value(tmp_path):
    assert parse_speed("10x") == 10 and parse_speed(2) == 2 and parse_speed("max") is None
    with pytest.raises(FeedError, match="'fast'"):
        parse_speed("fast")
    with pytest.raises(FeedError, match="COLLECTOR_FEED='ftp'"):
        make_feed("ftp")
    with pytest.raises(FeedError, match="does not exist"):
        make_feed(f"csv:{tmp_path / 'missing.csv'}")
    assert isinstance(make_feed("simulated", symbols={"005930": None}), SimulatedKRXFeed)


def test_the_kis_feed_needs_its_symbols(settings):
    settings.KIS_FEED_SYMBOLS = []
    with pytest.raises(FeedError, match="set KIS_FEED_SYMBOLS"):
        make_feed("kis")
