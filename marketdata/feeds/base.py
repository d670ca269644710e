"""The feed interface: an async iterator of tick batches, plus the feed's own clock."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal

from marketdata.types import Tick
from qbsite.exceptions import InvalidInput

MAX_SPEED = "max"


class FeedError(InvalidInput):
    code = "feed_invalid"


def parse_speed(value) -> float | None:
    """1, 10, "10x", "1x" -> a factor; "max" -> None (as fast as the consumer takes ticks)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == MAX_SPEED):
        return None
    text = str(value).strip().lower().removesuffix("x")
    try:
        factor = float(text)
    except ValueError:
        raise FeedError(f"speed {value!r} is not a factor (1, 10, '10x') or 'max'.") from None
    if not factor > 0 or factor == float("inf"):
        raise FeedError(f"speed {value!r} must be a positive factor or 'max'.")
    return factor


class Feed(abc.ABC):
    """Where ticks come from.

    - `batches()`: async iterator of lists of Tick (each list in time order); ends when the feed
      has no more (a replay), never for a live feed;
    - `now()`: the feed's clock (aware UTC). The collector validates and closes candles on this
      clock, never on the wall clock, so a replay at 100x closes candles on time;
    - `symbols`: the symbols it sends; `reference_prices()`: the previous close of each symbol
      when the feed knows it (the base of the +-30% band).
    """

    name = "feed"

    @property
    @abc.abstractmethod
    def symbols(self) -> list[str]: ...

    @abc.abstractmethod
    def now(self) -> dt.datetime: ...

    @abc.abstractmethod
    def batches(self) -> AsyncIterator[list[Tick]]: ...

    def reference_prices(self) -> dict[str, Decimal]:
        return {}

    async def close(self) -> None:  # noqa: B027 - most feeds hold nothing to release
        """Release connections / files."""
