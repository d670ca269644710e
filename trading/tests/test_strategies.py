"""The strategy interface and the built-ins, on hand-made close series (no I/O: strategies
have none). Each series says by hand where the signal must come, and the test checks it comes
exactly there: not a candle before, not a candle after."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from marketdata.krx import SEOUL
from marketdata.types import Candle
from qbsite.exceptions import InvalidInput
from trading.models import Side
from trading.strategies import (
    ParameterError,
    UnknownStrategyKind,
    get_strategy_class,
    registry,
    validate_parameters,
)
from trading.strategies.base import (
    BUY,
    SELL,
    BaseStrategy,
    InvalidIntent,
    Param,
    SignalIntent,
    StrategyContext,
    clean_parameters,
    register,
)
from trading.strategies.builtin import (
    LIQUIDATION_REASON,
    MacdCrossover,
    RsiReversion,
    SampleMean5,
    SmaCrossover,
)

# 09:00 KST on a Monday, the open.
OPEN = dt.datetime(2026, 1, 5, 9, 0, tzinfo=SEOUL)
MINUTE = dt.timedelta(minutes=1)
SHARES = 10


def candle(close, *, at: dt.datetime = OPEN, interval: str = "1m") -> Candle:
    price = Decimal(close)
    return Candle("005930", interval, at.astimezone(dt.UTC), price, price, price, price, 100)


def ctx(closes, *, at=OPEN, holding=0, open_buy=0, open_sell=0, interval="1m"):
    closes = tuple(Decimal(c) for c in closes)
    return StrategyContext(
        symbol="005930",
        interval=interval,
        candle=candle(closes[-1], at=at, interval=interval),
        closes=closes,
        holding=holding,
        open_buy=open_buy,
        open_sell=open_sell,
    )


def simulate(strategy: BaseStrategy, closes, *, holding=0, start=OPEN):
    """Feed the closes one candle at a time, as the engine would (each context holds the last
    history() closes), filling every signal at once: a BUY holds SHARES, a SELL sells all.
    Returns [(index, action, intent)]."""
    made = []
    for index in range(len(closes)):
        window = closes[: index + 1][-strategy.history() :]
        intents = strategy.on_candle(ctx(window, at=start + index * MINUTE, holding=holding))
        assert len(intents) <= 1
        for intent in intents:
            made.append((index, intent.action, intent))
            holding = SHARES if intent.action == BUY else 0
    return made


def actions(made):
    return [(index, action) for index, action, _ in made]


# --- the registry ----------------------------------------------------------------------------


def test_the_builtins_are_registered_by_kind():
    assert registry() == {
        "macd_crossover": MacdCrossover,
        "rsi_reversion": RsiReversion,
        "sample_mean5": SampleMean5,
        "sma_crossover": SmaCrossover,
    }
    assert get_strategy_class("sample_mean5") is SampleMean5
    assert (BUY, SELL) == (Side.BUY, Side.SELL)


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(UnknownStrategyKind) as caught:
        get_strategy_class("momentum")
    assert "Unknown strategy kind 'momentum'" in caught.value.message
    assert "sma_crossover" in caught.value.message
    with pytest.raises(InvalidInput, match="Unknown strategy kind"):
        validate_parameters("momentum", {})


def test_a_kind_is_registered_once():
    class Impostor(BaseStrategy):
        kind = "sma_crossover"

    with pytest.raises(TypeError, match="registered twice"):
        register(Impostor)
    assert registry()["sma_crossover"] is SmaCrossover

    class Nameless(BaseStrategy):
        pass

    with pytest.raises(TypeError, match="no `kind`"):
        register(Nameless)


# --- parameters ------------------------------------------------------------------------------


def test_defaults_are_filled_in_json_form():
    assert validate_parameters("sma_crossover", {}) == {"fast": 5, "slow": 20}
    assert validate_parameters("sma_crossover", None) == {"fast": 5, "slow": 20}
    assert validate_parameters("sma_crossover", {"fast": 3}) == {"fast": 3, "slow": 20}
    assert validate_parameters("rsi_reversion", {"oversold": 25}) == {
        "period": 14,
        "oversold": 25.0,
        "overbought": 70.0,
    }
    assert validate_parameters("macd_crossover", {}) == {"fast": 12, "slow": 26, "signal": 9}
    assert validate_parameters("sample_mean5", {"liquidate_at": "15:10"}) == {
        "window": 5,
        "liquidate_at": "15:10",
    }


@pytest.mark.parametrize(
    ("kind", "params", "errors"),
    [
        # bad types
        ("sma_crossover", {"fast": "5"}, {"fast": "must be a whole number, got '5'"}),
        ("sma_crossover", {"fast": 5.5}, {"fast": "must be a whole number, got 5.5"}),
        ("sma_crossover", {"fast": True}, {"fast": "must be a whole number, got True"}),
        ("rsi_reversion", {"oversold": "low"}, {"oversold": "must be a number, got 'low'"}),
        ("rsi_reversion", {"oversold": float("nan")}, {"oversold": "must be a finite number"}),
        ("sample_mean5", {"liquidate_at": "3pm"}, {"liquidate_at": "must be a time of day"}),
        ("sample_mean5", {"liquidate_at": 1520}, {"liquidate_at": "must be a time of day"}),
        # out of bounds
        ("sma_crossover", {"fast": 0}, {"fast": "must be at least 1, got 0"}),
        ("sma_crossover", {"slow": 151}, {"slow": "must be at most 150, got 151"}),
        ("rsi_reversion", {"overbought": 100.5}, {"overbought": "must be at most 100"}),
        ("sample_mean5", {"liquidate_at": "15:31"}, {"liquidate_at": "must be at most 15:30"}),
        ("sample_mean5", {"window": 1}, {"window": "must be at least 2, got 1"}),
        # unknown names
        (
            "sma_crossover",
            {"fast": 3, "period": 9},
            {"period": "unknown parameter (parameters of sma_crossover: fast, slow)"},
        ),
        # across parameters
        ("sma_crossover", {"fast": 20, "slow": 20}, {"fast": "must be less than slow (20)"}),
        ("macd_crossover", {"fast": 30}, {"fast": "must be less than slow (26), got 30"}),
        ("rsi_reversion", {"oversold": 80}, {"oversold": "must be less than overbought (70.0)"}),
    ],
)
def test_bad_parameters_are_refused_naming_each(kind, params, errors):
    with pytest.raises(ParameterError) as caught:
        validate_parameters(kind, params)
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert set(error.errors) == set(errors)
    for name, problem in errors.items():
        assert problem in error.errors[name]
        assert f"{name}: {problem}" in error.message
    assert error.message.startswith(f"Invalid parameters for {kind}: ")
    assert error.details["parameters"] == error.errors


def test_every_bad_parameter_is_listed_at_once():
    with pytest.raises(ParameterError) as caught:
        validate_parameters("sample_mean5", {"window": "x", "liquidate_at": "25:00", "y": 1})
    assert set(caught.value.errors) == {"window", "liquidate_at", "y"}


def test_parameters_must_be_an_object():
    with pytest.raises(ParameterError, match="must be a JSON object, got list"):
        validate_parameters("sma_crossover", [5, 20])


class Typed(BaseStrategy):  # not registered: a class for the Param types only
    kind = "typed_test"
    parameters = {
        "size": Param(Decimal, "0.5", min=0, max=1, help="A fraction."),
        "mode": Param(str, "fast", choices=("fast", "slow")),
        "short": Param(bool, False),
        "at": Param(dt.time, "09:30"),
    }


def test_param_types_clean_and_round_trip_through_json():
    typed = clean_parameters(Typed, {"size": 0.25, "at": "10:15:30"})
    assert typed == {
        "size": Decimal("0.25"),
        "mode": "fast",
        "short": False,
        "at": dt.time(10, 15, 30),
    }
    instance = Typed({"size": "1", "mode": "slow", "short": True})
    assert instance.params["size"] == Decimal(1) and instance.params["short"] is True
    assert instance.params["at"] == dt.time(9, 30)
    with pytest.raises(TypeError):
        instance.params["size"] = 2  # read-only
    json_form = {n: Typed.parameters[n].to_json(v) for n, v in typed.items()}
    assert json_form == {"size": "0.25", "mode": "fast", "short": False, "at": "10:15:30"}
    assert clean_parameters(Typed, json_form) == typed
    with pytest.raises(ParameterError) as caught:
        clean_parameters(Typed, {"size": "1.5", "mode": "medium", "short": "yes", "at": "9"})
    assert caught.value.errors == {
        "size": "must be at most 1, got '1.5'",
        "mode": "must be one of fast, slow, got 'medium'",
        "short": "must be true or false, got 'yes'",
        "at": "must be a time of day as HH:MM (Seoul), got '9'",
    }


def test_a_default_outside_its_bounds_is_a_bug_caught_at_import():
    with pytest.raises(TypeError, match="must be at most 10"):
        Param(int, 11, max=10)
    with pytest.raises(TypeError, match="not one of"):
        Param(list, [])


def test_the_help_lists_parameters_with_defaults():
    text = SmaCrossover.parameters_help()
    assert text.startswith("sma_crossover: fast: int, default 5, 1 to 100")
    assert "slow: int, default 20, 2 to 150" in text
    assert "liquidate_at: time (HH:MM), default 15:20, 09:00 to 15:30" in (
        SampleMean5.parameters_help()
    )


# --- intents and context ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"action": "HOLD"}, "action is BUY or SELL"),
        ({"action": "BUY", "confidence": 1.5}, "confidence is a number from 0 to 1"),
        ({"action": "BUY", "confidence": -0.1}, "confidence is a number from 0 to 1"),
        ({"action": "BUY", "confidence": float("nan")}, "confidence is a number from 0 to 1"),
        ({"action": "BUY", "confidence": "high"}, "confidence is a number from 0 to 1"),
        ({"action": "SELL", "quantity": 0}, "quantity is a whole number of shares"),
        ({"action": "SELL", "quantity": 2.5}, "quantity is a whole number of shares"),
        ({"action": "SELL", "reason": None}, "reason is a string"),
    ],
)
def test_a_bad_intent_is_refused_when_made(kwargs, problem):
    with pytest.raises(InvalidIntent, match=problem):
        SignalIntent(**kwargs)


def test_context_holding_views_and_clock():
    c = ctx([100], at=OPEN, holding=30, open_sell=10)
    assert c.candle_end == (OPEN + MINUTE).astimezone(dt.UTC)
    assert c.candle_end_seoul.time() == dt.time(9, 1)
    assert c.sellable == 20 and not c.flat
    assert ctx([100], open_buy=5).flat is False
    assert ctx([100]).flat is True and ctx([100]).sellable == 0
    assert ctx([100], interval="5m").candle_end_seoul.time() == dt.time(9, 5)


def test_hooks_in_use_are_those_overridden():
    assert SmaCrossover.uses("on_candle") and not SmaCrossover.uses("on_indicators")
    assert not BaseStrategy.uses("on_candle")


# --- SMA crossover ---------------------------------------------------------------------------


def test_sma_crossover_buys_exactly_at_the_cross_up():
    s = SmaCrossover({"fast": 2, "slow": 4})
    closes = [110, 108, 106, 104, 102, 100, 98, 104, 110, 112]
    # index 6: fast (100+98)/2 = 99    < slow (104+102+100+98)/4 = 101
    # index 7: fast (98+104)/2 = 101  == slow (102+100+98+104)/4 = 101: touching is no cross
    # index 8: fast (104+110)/2 = 107  > slow (100+98+104+110)/4 = 103: the cross
    # index 9: fast 111 > slow 106 and was above already: nothing
    made = simulate(s, closes)
    assert actions(made) == [(8, BUY)]
    intent = made[0][2]
    assert intent.quantity is None and intent.confidence == 1
    assert intent.reason == "SMA 2 crossed above SMA 4"


def test_sma_crossover_sells_exactly_at_the_cross_down_only_when_holding():
    s = SmaCrossover({"fast": 2, "slow": 4})
    closes = [90, 92, 94, 96, 98, 100, 102, 96, 90, 88]
    # index 7: fast 99 == slow 99; index 8: fast 93 < slow 97: the cross down
    made = simulate(s, closes, holding=SHARES)
    assert actions(made) == [(8, SELL)]
    assert made[0][2].quantity == SHARES
    assert simulate(s, closes, holding=0) == []  # long only: nothing to sell


def test_sma_crossover_needs_slow_plus_one_closes():
    s = SmaCrossover({"fast": 2, "slow": 4})
    assert s.history() == 5
    # a cross visible in four closes is not enough to know the slow SMA one candle before
    assert s.on_candle(ctx([100, 100, 100, 110])) == []
    assert len(s.on_candle(ctx([100, 100, 100, 100, 110]))) == 1


def test_sma_crossover_does_not_buy_again_while_a_buy_is_on_its_way():
    s = SmaCrossover({"fast": 2, "slow": 4})
    window = [104, 102, 100, 98, 104, 110][-5:]
    assert s.on_candle(ctx(window)) != []
    assert s.on_candle(ctx(window, open_buy=SHARES)) == []
    assert s.on_candle(ctx(window, holding=SHARES)) == []


# --- RSI mean reversion ----------------------------------------------------------------------


def test_rsi_reversion_by_hand():
    s = RsiReversion({"period": 2, "oversold": 30, "overbought": 70})
    closes = [100, 103, 100, 97, 101, 105, 104]
    # Wilder, period 2:
    # index 2: changes +3, -3: gain 1.5, loss 1.5: RSI 50
    # index 3: -3: gain 0.75, loss 2.25: RSI 25 < 30: BUY, confidence (30 - 25) / 30
    # index 4: +4: gain 2.375, loss 1.125: RSI 67.9 (holding: nothing)
    # index 5: +4: gain 3.1875, loss 0.5625: RSI 85 > 70: SELL, confidence (85 - 70) / 30
    # index 6: -1: gain 1.59375, loss 0.78125: RSI 67.1 (flat again: 67 is no BUY)
    made = simulate(s, closes)
    assert actions(made) == [(3, BUY), (5, SELL)]
    assert made[0][2].confidence == pytest.approx(1 / 6, abs=1e-6)
    assert made[0][2].reason == "RSI 25.00 < 30"
    assert made[1][2].confidence == pytest.approx(0.5, abs=1e-6)
    assert made[1][2].quantity == SHARES


def test_rsi_reversion_repeats_nothing_while_it_holds():
    s = RsiReversion({"period": 2})
    falling = [100, 103, 100, 97, 95, 93, 91]  # RSI stays under 30 from index 3 on
    assert actions(simulate(s, falling)) == [(3, BUY)]
    # Without the fill (the buy never happened) it is still oversold and asks again.
    again = [i for i in range(3, 7) if s.on_candle(ctx(falling[: i + 1]))]
    assert again == [3, 4, 5, 6]


def test_rsi_reversion_is_silent_until_the_rsi_exists():
    s = RsiReversion({})
    assert s.history() == 141
    falling = list(range(200, 185, -1))  # 15 closes: RSI 14 is defined on the 15th, at 0
    assert s.on_candle(ctx(falling[:14])) == []
    [intent] = s.on_candle(ctx(falling))
    assert intent.action == BUY and intent.confidence == 1


# --- MACD crossover --------------------------------------------------------------------------


def test_macd_crossover_by_hand():
    s = MacdCrossover({"fast": 1, "slow": 2, "signal": 2})
    closes = [100, 100, 100, 100, 106, 106, 106]
    # TA-Lib alignment: slow EMA(2) from index 1 (SMA of 100, 100), k = 2/3; fast EMA(1)
    # = the close; MACD from index 1; signal EMA(2) of MACD from index 2.
    # index 3: MACD 0, signal 0
    # index 4: slow 100 + 6 * 2/3 = 104, MACD 2 > signal 4/3: the cross up -> BUY
    # index 5: slow 105.33, MACD 0.67 < signal 0.89: the cross down -> SELL
    # index 6: slow 105.78, MACD 0.22 < signal 0.44: still below, nothing
    assert actions(simulate(s, closes)) == [(4, BUY), (5, SELL)]
    # without the buy there is nothing to sell at 5
    assert actions(simulate(s, closes[:6], holding=0)[:1]) == [(4, BUY)]
    assert s.on_candle(ctx(closes[:6], holding=0)) == []


def test_macd_crossover_waits_for_the_signal_line_on_two_candles():
    s = MacdCrossover({})
    assert s.history() == 105
    rising = [70_000 + 10 * i for i in range(34)]  # signal line defined at the 34th close
    assert s.on_candle(ctx(rising)) == []


# --- the sample: close vs the mean of the last five ------------------------------------------


def test_sample_mean5_buys_above_and_sells_at_or_below_the_mean():
    s = SampleMean5({})
    closes = [100, 100, 100, 100, 100, 101, 103, 104, 101, 102]
    # index 4: 100 == mean 100, flat: nothing (a SELL needs shares)
    # index 5: 101 > mean 100.2: BUY
    # index 6, 7: above the mean, holding: nothing
    # index 8: window 100 101 103 104 101: mean 101.8 >= 101: SELL
    # index 9: window 101 103 104 101 102: mean 102.2 > 102? no: at or below, but flat: nothing
    made = simulate(s, closes)
    assert actions(made) == [(5, BUY), (8, SELL)]
    assert made[0][2].reason == "close 101 > mean 100.20 of 5"
    assert made[1][2].quantity == SHARES


def test_sample_mean5_sells_when_the_close_equals_the_mean_exactly():
    s = SampleMean5({})
    window = [100, 100, 104, 101, 100.2]  # 505.2 / 5 = 101.04: 100.2 is below
    assert s.on_candle(ctx(window, holding=SHARES))[0].action == SELL
    equal = [100, 100, 100, 104, 101]  # 505 / 5 = 101 == the close: "at or below"
    [intent] = s.on_candle(ctx(equal, holding=SHARES))
    assert intent.action == SELL and intent.reason == "close 101 <= mean 101.00 of 5"
    assert s.on_candle(ctx(equal, holding=0)) == []  # and never a BUY
    assert s.on_candle(ctx([*equal[:4], 102], holding=0))[0].action == BUY


def test_sample_mean5_needs_five_closes():
    s = SampleMean5({})
    assert s.on_candle(ctx([100, 100, 100, 110])) == []
    assert s.on_candle(ctx([100, 100, 100, 100, 110]))[0].action == BUY


def _at(hour, minute):
    return dt.datetime(2026, 1, 5, hour, minute, tzinfo=SEOUL)


RISING = [100, 100, 100, 100, 110]  # close above the mean: a BUY when flat


def test_sample_mean5_liquidates_on_the_candle_ending_at_1520_seoul():
    s = SampleMean5({})
    # The 15:18 candle ends 15:19: trading as usual (holding, above the mean: nothing).
    assert s.on_candle(ctx(RISING, at=_at(15, 18), holding=SHARES)) == []
    # The 15:19 candle ends 15:20: everything held is sold, whatever the closes say.
    [intent] = s.on_candle(ctx(RISING, at=_at(15, 19), holding=SHARES))
    assert (intent.action, intent.reason, intent.quantity) == (SELL, LIQUIDATION_REASON, SHARES)
    # Later candles sell what is still held (a fill that came late), minus what is being sold.
    [later] = s.on_candle(ctx(RISING, at=_at(15, 25), holding=SHARES + 5, open_sell=SHARES))
    assert (later.action, later.quantity) == (SELL, 5)
    assert s.on_candle(ctx(RISING, at=_at(15, 25), holding=SHARES, open_sell=SHARES)) == []


def test_sample_mean5_buys_nothing_from_1520_seoul():
    s = SampleMean5({})
    assert s.on_candle(ctx(RISING, at=_at(15, 18)))[0].action == BUY  # ends 15:19
    assert s.on_candle(ctx(RISING, at=_at(15, 19))) == []  # ends 15:20
    assert s.on_candle(ctx(RISING, at=_at(15, 29))) == []
    # The next morning it trades again.
    next_morning = dt.datetime(2026, 1, 6, 9, 0, tzinfo=SEOUL)
    assert s.on_candle(ctx(RISING, at=next_morning))[0].action == BUY


def test_sample_mean5_liquidation_time_is_seoul_time_not_utc():
    s = SampleMean5({})
    # 06:19 UTC is 15:19 KST: this candle ends 15:20 in Seoul.
    utc = dt.datetime(2026, 1, 5, 6, 19, tzinfo=dt.UTC)
    [intent] = s.on_candle(ctx(RISING, at=utc, holding=SHARES))
    assert intent.reason == LIQUIDATION_REASON
    # A liquidation time of its own.
    early = SampleMean5({"liquidate_at": "15:00"})
    assert early.on_candle(ctx(RISING, at=_at(14, 59), holding=SHARES))[0].reason == (
        LIQUIDATION_REASON
    )
    assert early.on_candle(ctx(RISING, at=_at(14, 58), holding=SHARES)) == []


def test_sample_mean5_runs_on_one_minute_candles_only():
    assert SampleMean5.intervals == ("1m",)
