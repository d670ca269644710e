"""Incremental technical indicators: SMA 20, RSI 14 (Wilder), MACD 12/26/9.

One `IndicatorState` per (symbol, interval) takes closes one at a time in O(1) time and
constant memory (no history is kept beyond the SMA window), so 2,500 symbols cost well under
a megabyte per interval. Floats, not Decimal: indicators are not money (STYLE.md).

The figures equal TA-Lib's (talib.SMA, talib.RSI, talib.MACD with their default settings) to
1e-6 over any series; the tests hold them to it. TA-Lib is the reference traders compare with,
so its conventions are kept where textbooks differ (talipp 2.7 was checked and matches TA-Lib for
SMA, EMA and RSI on a random walk, but not for MACD and not for RSI on flat runs, and it keeps
every past value in lists that grow forever; hence these small classes):

- EMA: the first value is the SMA of the first `period` inputs, then k = 2 / (period + 1).
- RSI: Wilder's smoothing. The first average gain / loss is the plain mean of the first 14
  changes (defined at the 15th close); RSI = 100 * gain / (gain + loss), and 0 when both are
  0 (a series flat from its start), as TA-Lib does. A flat run later on keeps the last RSI
  (both averages shrink alike), also as TA-Lib does: same operations in the same order.
- MACD: TA-Lib starts the fast EMA at the same close as the slow one: its seed is the SMA of
  closes 15..26 (not 1..12), so MACD is defined from the 26th close and the signal line (EMA 9
  of MACD, seeded likewise) and the histogram from the 34th.

Warm-up: each field of `IndicatorValues` is None until that indicator is defined.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import NamedTuple

SMA_PERIOD = 20
RSI_PERIOD = 14
MACD_FAST = 12
MACD_SLOW = 26
MACD_SIGNAL = 9

# Closes needed before every value is defined (MACD's signal line comes last).
CANDLES_TO_DEFINE = MACD_SLOW + MACD_SIGNAL - 1  # 34


class SMA:
    """Simple moving average over a ring of the last `period` inputs."""

    __slots__ = ("_count", "_ring", "period")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"SMA period must be >= 1, got {period}")
        self.period = period
        self._ring = array("d", bytes(8 * period))
        self._count = 0

    def update(self, value: float) -> float | None:
        self._ring[self._count % self.period] = value
        self._count += 1
        if self._count < self.period:
            return None
        # Summing the window each time (20 adds) never drifts, unlike a running total.
        return sum(self._ring) / self.period


class EMA:
    """Exponential moving average seeded with the SMA of its first `period` inputs."""

    __slots__ = ("_count", "_k", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"EMA period must be >= 1, got {period}")
        self.period = period
        self._k = 2.0 / (period + 1)
        self._count = 0
        self.value: float | None = None  # while seeding: the running sum

    def update(self, value: float) -> float | None:
        self._count += 1
        if self._count < self.period:
            self.value = (self.value or 0.0) + value
            return None
        if self._count == self.period:
            self.value = ((self.value or 0.0) + value) / self.period
        else:
            self.value += (value - self.value) * self._k
        return self.value


class RSI:
    """Relative strength index with Wilder's smoothing (TA-Lib's conventions, module doc)."""

    __slots__ = ("_count", "_gain", "_loss", "_prev", "period")

    def __init__(self, period: int) -> None:
        if period < 2:
            raise ValueError(f"RSI period must be >= 2, got {period}")
        self.period = period
        self._prev: float | None = None
        self._count = 0  # changes seen
        self._gain = 0.0
        self._loss = 0.0

    def update(self, value: float) -> float | None:
        prev, self._prev = self._prev, value
        if prev is None:
            return None
        change = value - prev
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        self._count += 1
        period = self.period
        if self._count < period:
            self._gain += gain
            self._loss += loss
            return None
        if self._count == period:
            self._gain = (self._gain + gain) / period
            self._loss = (self._loss + loss) / period
        else:
            self._gain = (self._gain * (period - 1) + gain) / period
            self._loss = (self._loss * (period - 1) + loss) / period
        total = self._gain + self._loss
        if total == 0.0:
            return 0.0
        return 100.0 * (self._gain / total)


class MACDValues(NamedTuple):
    macd: float | None
    signal: float | None
    hist: float | None


class MACD:
    """MACD line, signal line and histogram, aligned the way TA-Lib aligns them."""

    __slots__ = ("_count", "_fast", "_signal", "_skip", "_slow")

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        if not 1 <= fast < slow or signal < 1:
            raise ValueError(
                f"MACD needs 1 <= fast < slow and signal >= 1, got {fast}/{slow}/{signal}"
            )
        self._fast = EMA(fast)
        self._slow = EMA(slow)
        self._signal = EMA(signal)
        # The fast EMA ignores the first slow - fast closes so that both are defined together.
        self._skip = slow - fast
        self._count = 0

    def update(self, value: float) -> MACDValues:
        self._count += 1
        slow = self._slow.update(value)
        fast = self._fast.update(value) if self._count > self._skip else None
        if slow is None or fast is None:
            return MACDValues(None, None, None)
        macd = fast - slow
        signal = self._signal.update(macd)
        if signal is None:
            return MACDValues(macd, None, None)
        return MACDValues(macd, signal, macd - signal)


class IndicatorValues(NamedTuple):
    """The values after one close; a field is None while its indicator warms up."""

    sma_20: float | None
    rsi: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None

    @property
    def complete(self) -> bool:
        return None not in self


class IndicatorState:
    """The indicators of one (symbol, interval), fed closed candles in time order.

    `last_time` is the open time of the last candle applied; the engine uses it to refuse
    duplicates and out-of-order candles, and to spot a missed one.
    """

    __slots__ = ("_macd", "_rsi", "_sma", "count", "last_time", "values")

    def __init__(self) -> None:
        self._sma = SMA(SMA_PERIOD)
        self._rsi = RSI(RSI_PERIOD)
        self._macd = MACD(MACD_FAST, MACD_SLOW, MACD_SIGNAL)
        self.count = 0  # closes applied
        self.last_time = None  # datetime of the last candle applied, set by the caller
        self.values = IndicatorValues(None, None, None, None, None)

    def update(self, close: float) -> IndicatorValues:
        close = float(close)
        macd = self._macd.update(close)
        self.values = IndicatorValues(
            self._sma.update(close), self._rsi.update(close), macd.macd, macd.signal, macd.hist
        )
        self.count += 1
        return self.values

    def warm(self, closes: Iterable[float]) -> IndicatorValues:
        """Feed past closes, oldest first; returns the values after the last one."""
        for close in closes:
            self.update(close)
        return self.values
