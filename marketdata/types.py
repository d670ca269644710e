"""The shapes that flow tick -> Redis -> PostgreSQL: Tick and Candle, and the candle JSON.

Prices are Decimal KRW (KRX prices are whole won). The candle JSON is the contract of
`candles:{symbol}:{interval}` (DESIGN.md): {timestamp, open, high, low, close, volume, interval}
with `timestamp` the candle's open time in UTC ISO 8601, prices as JSON integers when whole
(always, on KRX) and as strings otherwise, so that no reader ever sees a float price.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade print: the last price and this print's volume, at an aware UTC time."""

    symbol: str
    time: dt.datetime
    price: Decimal
    volume: int
    # Cumulative day volume when the feed gives it (KIS does); None otherwise.
    day_volume: int | None = None


@dataclass(slots=True)
class Candle:
    symbol: str
    interval: str
    time: dt.datetime  # open time, aware UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def to_dict(self) -> dict:
        return {
            "timestamp": _iso(self.time),
            "open": _price_out(self.open),
            "high": _price_out(self.high),
            "low": _price_out(self.low),
            "close": _price_out(self.close),
            "volume": self.volume,
            "interval": self.interval,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, symbol: str, text: str | bytes) -> Candle:
        data = json.loads(text)
        return cls(
            symbol=symbol,
            interval=data["interval"],
            time=dt.datetime.fromisoformat(data["timestamp"]),
            open=Decimal(str(data["open"])),
            high=Decimal(str(data["high"])),
            low=Decimal(str(data["low"])),
            close=Decimal(str(data["close"])),
            volume=int(data["volume"]),
        )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _price_out(value: Decimal) -> int | str:
    integral = value.to_integral_value()
    return int(integral) if integral == value else str(value)
