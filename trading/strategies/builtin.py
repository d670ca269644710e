"""The built-in strategies. Long only: each buys when flat and sells only what it holds.

Every one decides on ctx alone (base.py): the closes are recomputed into indicators with
marketdata.indicators (the same SMA / RSI / MACD as the indicators engine, checked against
TA-Lib), so a strategy's periods are its own parameters and a backtest over stored candles
gets the same answers as the live engine. A SELL asks for every share the strategy holds
(ctx.sellable); a BUY leaves the size to the orders engine (the strategy's allocation).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from marketdata.indicators import MACD, RSI, SMA

from .base import BUY, SELL, BaseStrategy, Param, SignalIntent, StrategyContext, register


def _floats(closes) -> list[float]:
    return [float(close) for close in closes]


def _sell(ctx: StrategyContext, reason: str, confidence=1) -> list[SignalIntent]:
    return [SignalIntent(SELL, confidence=confidence, reason=reason, quantity=ctx.sellable)]


@register
class SmaCrossover(BaseStrategy):
    kind = "sma_crossover"
    label = "SMA crossover"
    description = (
        "BUY when the fast SMA of the closes crosses above the slow SMA (it was at or below it "
        "one candle before), SELL when it crosses below."
    )
    parameters = {
        "fast": Param(int, 5, min=1, max=100, help="Candles of the fast SMA."),
        "slow": Param(int, 20, min=2, max=150, help="Candles of the slow SMA (> fast)."),
    }

    @classmethod
    def check(cls, params):
        if params["fast"] >= params["slow"]:
            return {"fast": f"must be less than slow ({params['slow']}), got {params['fast']}"}
        return {}

    def history(self) -> int:
        return self.params["slow"] + 1  # both SMAs now and one candle before

    def on_candle(self, ctx: StrategyContext) -> list[SignalIntent]:
        if len(ctx.closes) < self.history():
            return []
        fast, slow = SMA(self.params["fast"]), SMA(self.params["slow"])
        pairs = [(fast.update(c), slow.update(c)) for c in _floats(ctx.closes[-self.history() :])]
        (fast_before, slow_before), (fast_now, slow_now) = pairs[-2], pairs[-1]
        if fast_before <= slow_before and fast_now > slow_now and ctx.flat:
            return [
                SignalIntent(
                    BUY, reason=f"SMA {self.params['fast']} crossed above SMA {self.params['slow']}"
                )
            ]
        if fast_before >= slow_before and fast_now < slow_now and ctx.sellable:
            return _sell(ctx, f"SMA {self.params['fast']} crossed below SMA {self.params['slow']}")
        return []


@register
class RsiReversion(BaseStrategy):
    kind = "rsi_reversion"
    label = "RSI mean reversion"
    description = (
        "RSI (Wilder) of the closes: BUY when it is below `oversold`, SELL when it is above "
        "`overbought`. Confidence grows with the distance past the level."
    )
    parameters = {
        "period": Param(int, 14, min=2, max=50, help="RSI period (Wilder's smoothing)."),
        "oversold": Param(float, 30.0, min=0, max=100, help="BUY below this RSI."),
        "overbought": Param(float, 70.0, min=0, max=100, help="SELL above this RSI."),
    }

    @classmethod
    def check(cls, params):
        if params["oversold"] >= params["overbought"]:
            return {
                "oversold": f"must be less than overbought ({params['overbought']}), "
                f"got {params['oversold']}"
            }
        return {}

    def history(self) -> int:
        # Wilder's averages forget their seed as ((n-1)/n)^k: ten periods of closes put the
        # value within about 0.1 RSI points of one computed over the whole series.
        return 10 * self.params["period"] + 1

    def on_candle(self, ctx: StrategyContext) -> list[SignalIntent]:
        period = self.params["period"]
        if len(ctx.closes) < period + 1:
            return []
        rsi = RSI(period)
        value = None
        for close in _floats(ctx.closes[-self.history() :]):
            value = rsi.update(close)
        oversold, overbought = self.params["oversold"], self.params["overbought"]
        if value < oversold and ctx.flat:
            confidence = (oversold - value) / oversold if oversold else 1
            return [
                SignalIntent(
                    BUY, confidence=round(confidence, 6), reason=f"RSI {value:.2f} < {oversold:g}"
                )
            ]
        if value > overbought and ctx.sellable:
            room = 100 - overbought
            confidence = (value - overbought) / room if room else 1
            return _sell(ctx, f"RSI {value:.2f} > {overbought:g}", round(confidence, 6))
        return []


@register
class MacdCrossover(BaseStrategy):
    kind = "macd_crossover"
    label = "MACD crossover"
    description = (
        "MACD (EMA fast - EMA slow of the closes) against its signal line (EMA of the MACD): "
        "BUY when the MACD line crosses above the signal line, SELL when it crosses below."
    )
    parameters = {
        "fast": Param(int, 12, min=1, max=50, help="Fast EMA period."),
        "slow": Param(int, 26, min=2, max=100, help="Slow EMA period (> fast)."),
        "signal": Param(int, 9, min=1, max=50, help="Signal line EMA period."),
    }

    @classmethod
    def check(cls, params):
        if params["fast"] >= params["slow"]:
            return {"fast": f"must be less than slow ({params['slow']}), got {params['fast']}"}
        return {}

    def _defined_after(self) -> int:
        # TA-Lib's alignment (marketdata.indicators): the signal line exists from close
        # slow + signal - 1; a cross needs it on two candles.
        return self.params["slow"] + self.params["signal"]

    def history(self) -> int:
        # Three times what defines it: the EMAs' seeds fade to well under a won.
        return 3 * self._defined_after()

    def on_candle(self, ctx: StrategyContext) -> list[SignalIntent]:
        if len(ctx.closes) < self._defined_after():
            return []
        macd = MACD(self.params["fast"], self.params["slow"], self.params["signal"])
        values = [macd.update(c) for c in _floats(ctx.closes[-self.history() :])]
        before, now = values[-2], values[-1]
        if before.macd <= before.signal and now.macd > now.signal and ctx.flat:
            return [SignalIntent(BUY, reason="MACD crossed above its signal line")]
        if before.macd >= before.signal and now.macd < now.signal and ctx.sellable:
            return _sell(ctx, "MACD crossed below its signal line")
        return []


LIQUIDATION_REASON = "end-of-day liquidation"


@register
class SampleMean5(BaseStrategy):
    kind = "sample_mean5"
    label = "Sample: close vs mean of the last five (1 minute)"
    description = (
        "The original plan's sample, on 1-minute candles: BUY when the close is above the mean "
        "of the last `window` closes (this one included), SELL when at or below it. From "
        "`liquidate_at` (Seoul) on, no BUY, and whatever it holds is sold (reason "
        "'end-of-day liquidation') on the first candle that ends at or after that time."
    )
    intervals = ("1m",)
    parameters = {
        "window": Param(int, 5, min=2, max=100, help="Closes averaged (the current one included)."),
        "liquidate_at": Param(
            dt.time,
            "15:20",
            min="09:00",
            max="15:30",
            help="Seoul time from which it only sells (candles ending then or later).",
        ),
    }

    def history(self) -> int:
        return self.params["window"]

    def on_candle(self, ctx: StrategyContext) -> list[SignalIntent]:
        if ctx.candle_end_seoul.time() >= self.params["liquidate_at"]:
            if ctx.sellable:
                return _sell(ctx, LIQUIDATION_REASON)
            return []
        window = self.params["window"]
        if len(ctx.closes) < window:
            return []
        last = ctx.closes[-window:]
        close = ctx.closes[-1]
        # In Decimal, exactly: "at or below the mean" is decided on equality, which a float
        # mean can get wrong by one ulp. (A five-close mean is not worth an SMA object.)
        above = close * window > sum(last, Decimal(0))
        mean = sum(last, Decimal(0)) / window
        if above and ctx.flat:
            return [SignalIntent(BUY, reason=f"close {close} > mean {mean:.2f} of {window}")]
        if not above and ctx.sellable:
            return _sell(ctx, f"close {close} <= mean {mean:.2f} of {window}")
        return []


BUILTIN = (SmaCrossover, RsiReversion, MacdCrossover, SampleMean5)
