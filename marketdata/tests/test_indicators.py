"""The incremental indicators against TA-Lib (the oracle: requirements/dev.txt), to 1e-6."""

import datetime as dt
import math
import tracemalloc

import numpy as np
import pytest
import talib

from marketdata.indicators import (
    CANDLES_TO_DEFINE,
    EMA,
    MACD,
    RSI,
    SMA,
    IndicatorState,
    IndicatorValues,
)

TOLERANCE = 1e-6
FIELDS = IndicatorValues._fields
# Index (0-based) of the first close at which each value is defined.
FIRST = {"sma_20": 19, "rsi": 14, "macd": 25, "macd_signal": 33, "macd_hist": 33}


def random_walk(seed: int, count: int) -> np.ndarray:
    """KRX-like closes: whole won, a random walk with a positive floor."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 120, count).round()
    return np.maximum(70_000 + np.cumsum(steps), 1_000).astype(float)


def flat_runs_and_jumps(seed: int) -> np.ndarray:
    """Flat from the start, then flat runs (up to 400 closes) between big moves (+-30%)."""
    rng = np.random.default_rng(seed)
    closes = [50_000.0] * 60  # flat from the start: RSI's gain + loss is exactly 0
    price = 50_000.0
    while len(closes) < 6_000:
        kind = rng.integers(0, 3)
        if kind == 0:  # limit up or down
            price = round(price * (1.3 if rng.integers(0, 2) else 0.7))
            closes.append(price)
        elif kind == 1:  # a flat run (a halted or illiquid stock)
            closes.extend([price] * int(rng.integers(1, 400)))
        else:  # ordinary moves
            for step in rng.normal(0, price * 0.004, int(rng.integers(5, 80))).round():
                price = max(price + step, 100.0)
                closes.append(price)
    return np.array(closes)


def talib_reference(closes: np.ndarray) -> dict[str, np.ndarray]:
    macd, signal, hist = talib.MACD(closes, fastperiod=12, slowperiod=26, signalperiod=9)
    return {
        "sma_20": talib.SMA(closes, timeperiod=20),
        "rsi": talib.RSI(closes, timeperiod=14),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
    }


def incremental(closes: np.ndarray) -> list[IndicatorValues]:
    state = IndicatorState()
    return [state.update(close) for close in closes]


def assert_matches_talib(closes: np.ndarray) -> None:
    reference = talib_reference(closes)
    values = incremental(closes)
    for field in FIELDS:
        ours = [getattr(v, field) for v in values]
        theirs = reference[field]
        first = FIRST[field]
        assert all(x is None for x in ours[:first]), f"{field} defined before close {first + 1}"
        assert all(x is not None for x in ours[first:]), f"{field} undefined after warm-up"
        compared = 0
        for index, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
            if mine is None or math.isnan(ref):
                continue
            assert abs(mine - ref) <= TOLERANCE, f"{field}[{index}]: {mine} != TA-Lib {ref}"
            compared += 1
        # TA-Lib defines every value from where we do, except the MACD line (from 34, not 26).
        assert compared == len(closes) - max(first, FIRST["macd_signal"] if "macd" in field else 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walks_match_talib(seed):
    assert_matches_talib(random_walk(seed, 5_000))


@pytest.mark.parametrize("seed", [7, 8])
def test_flat_runs_and_big_jumps_match_talib(seed):
    closes = flat_runs_and_jumps(seed)
    assert np.any(np.diff(closes) == 0) and np.max(np.abs(np.diff(closes) / closes[:-1])) > 0.29
    assert_matches_talib(closes)


def test_rsi_of_a_series_flat_from_its_start_is_0_like_talib():
    closes = np.full(40, 10_000.0)
    values = incremental(closes)
    assert [v.rsi for v in values[14:]] == [0.0] * 26
    assert list(talib.RSI(closes, timeperiod=14)[14:]) == [0.0] * 26
    # Flat SMA and MACD are the price and 0.
    assert values[-1].sma_20 == 10_000.0
    assert values[-1].macd == values[-1].macd_signal == values[-1].macd_hist == 0.0


def test_a_flat_run_after_moves_keeps_the_last_rsi():
    closes = np.concatenate([random_walk(4, 100), np.full(300, 71_000.0)])
    values = incremental(closes)
    assert values[-1].rsi == pytest.approx(values[101].rsi, abs=1e-9)
    assert values[-1].rsi == pytest.approx(talib.RSI(closes, timeperiod=14)[-1], abs=TOLERANCE)


def test_warm_up_gives_none_until_each_indicator_is_defined():
    state = IndicatorState()
    closes = random_walk(5, CANDLES_TO_DEFINE)
    for index, close in enumerate(closes):
        values = state.update(close)
        for field in FIELDS:
            assert (getattr(values, field) is None) == (index < FIRST[field]), (field, index)
        assert values.complete == (index == CANDLES_TO_DEFINE - 1)
    assert CANDLES_TO_DEFINE == 34
    assert state.count == 34


def test_warm_equals_updating_one_close_at_a_time_and_can_be_resumed():
    closes = random_walk(6, 500)
    one_by_one = incremental(closes)[-1]
    warmed = IndicatorState()
    assert warmed.warm(closes.tolist()) == one_by_one
    resumed = IndicatorState()
    resumed.warm(closes[:250])
    assert resumed.warm(iter(closes[250:])) == one_by_one == resumed.values
    assert resumed.count == 500
    assert IndicatorState().warm([]) == IndicatorValues(None, None, None, None, None)


def test_the_building_blocks_against_talib():
    closes = random_walk(9, 1_000)
    sma, ema, rsi, macd = SMA(5), EMA(10), RSI(3), MACD(3, 7, 4)
    ours = [(sma.update(c), ema.update(c), rsi.update(c), macd.update(c)) for c in closes]
    refs = (
        talib.SMA(closes, 5),
        talib.EMA(closes, 10),
        talib.RSI(closes, 3),
        talib.MACD(closes, 3, 7, 4)[1],
    )
    for index, (mine, *ref_row) in enumerate(zip(ours, *refs, strict=True)):
        for value, ref in zip((mine[0], mine[1], mine[2], mine[3].signal), ref_row, strict=True):
            assert (value is None) == bool(np.isnan(ref)), index
            if value is not None:
                assert abs(value - ref) <= TOLERANCE


@pytest.mark.parametrize(
    "make", [lambda: SMA(0), lambda: EMA(0), lambda: RSI(1), lambda: MACD(26, 12, 9)]
)
def test_bad_periods_are_refused(make):
    with pytest.raises(ValueError, match=r"period|MACD"):
        make()


def test_a_state_is_small_enough_for_the_whole_market():
    """Under 2 kB a state, keyed as the engine keys them: 2,500 symbols in under 5 MB."""
    closes = random_walk(10, 60).tolist()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        states = {}
        for number in range(500):
            state = IndicatorState()
            state.warm(closes)
            state.last_time = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)
            states[(f"{number:06d}", "1m")] = state
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert size / len(states) < 2_000, f"{size / len(states):.0f} bytes per state"
