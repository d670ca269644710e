"""A simulated KRX market: seeded random walks on the tick grid, inside the +-30% band, in sessions.

- Same seed, same symbols, same start -> the same ticks (random.Random(seed); no wall clock in
  the generator itself).
- Prices move by whole ticks (krx.tick_size), never outside krx.price_limits of the previous
  close. Each trading day: an opening print per symbol at the open (09:00), continuous trading
  until the closing auction (15:20), no prints during the auction, one closing print per symbol
  at the close (15:30), then the next trading day (prev close = that close). No prints on
  holidays, weekends or outside the session.
- Activity follows the usual U shape: about 3x the midday rate right after the open and before
  the closing auction; trade sizes are log-normal, larger at the edges of the day.
- Clock: `start` (aware) or, by default, now when KRX is open, else 09:00 KST of the last trading
  day whose session has begun, so `make run` shows a live market at any hour. The clock runs at
  `speed` x real time ("max": as fast as the consumer takes batches) and jumps from a close to
  the next trading day's open.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal

from marketdata import krx
from marketdata.aggregation import Sessions, kst_day
from marketdata.feeds.base import Feed, parse_speed
from marketdata.types import Tick

CLOSING_AUCTION = 600  # the last 10 minutes before the close: orders only, one print at the end


def default_start(wall: dt.datetime, sessions: Sessions | None = None) -> dt.datetime:
    """`wall` itself when KRX is open then; else the open of the last session begun by `wall`."""
    if krx.is_open(wall):
        return wall
    sessions = sessions or Sessions()
    day = sessions.last_trading_day(kst_day(wall.timestamp()))
    if sessions.bounds(day).open > wall.timestamp():
        day = sessions.last_trading_day(day - 1)
    return dt.datetime.fromtimestamp(sessions.bounds(day).open, dt.UTC)


class SimulatedKRXFeed(Feed):
    name = "simulated"

    def __init__(
        self,
        symbols: Mapping[str, Decimal | int | None] | list[str],
        *,
        seed: int | None = 0,
        speed=1.0,
        start: dt.datetime | None = None,
        step: float = 0.1,
        rate: float = 0.5,
        instruments: Mapping[str, str] | None = None,
        wall_clock=None,
        monotonic=time.monotonic,
        prices: Mapping[str, Decimal | int] | None = None,
    ) -> None:
        """symbols: {symbol: previous close (None = a seeded random price)} or a list.
        rate: mean prints per symbol per second at midday. instruments: {symbol: "etf"}.
        prices: {symbol: last price} where the session already traded (a restart goes on from
        there, inside the band of the previous close); else a walk starts at its close."""
        if not isinstance(symbols, Mapping):
            symbols = dict.fromkeys(symbols)
        self._symbols = sorted(symbols)
        self.seed = seed
        self.rng = random.Random(seed)
        self.speed = parse_speed(speed)
        self.step = step
        self.rate = rate
        self.sessions = Sessions()
        self.instruments = {s: (instruments or {}).get(s, "stock") for s in self._symbols}
        wall = (wall_clock or (lambda: dt.datetime.now(dt.UTC)))()
        self.start = start if start is not None else default_start(wall, self.sessions)
        self.prev_close: dict[str, int] = {}
        for symbol in self._symbols:
            given = symbols[symbol]
            self.prev_close[symbol] = int(given) if given else self._random_price(symbol)
        self.price = dict(self.prev_close)
        self.limits: dict[str, tuple[int, int]] = {}
        self._set_limits()
        for symbol, last in (prices or {}).items():
            if symbol in self.price and last:
                lower, upper = self.limits[symbol]
                self.price[symbol] = min(max(int(last), lower), upper)
        self._monotonic = monotonic
        self._clock = self.start.timestamp()  # the generator's position (epoch)
        self._anchor_sim = self._clock
        self._anchor_wall = monotonic()
        self._tick_cache: dict[tuple[int, str], int] = {}

    # --- Feed ----------------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def reference_prices(self) -> dict[str, Decimal]:
        return {symbol: Decimal(price) for symbol, price in self.prev_close.items()}

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._now(), dt.UTC)

    def _now(self) -> float:
        if self.speed is None:
            return self._clock
        return self._anchor_sim + (self._monotonic() - self._anchor_wall) * self.speed

    async def batches(self):
        for step_end, ticks in self.steps():
            if self.speed is None:
                self._clock = step_end
                if ticks:
                    yield ticks
                await asyncio.sleep(0)
                continue
            if step_end - self._now() > 60:
                # The generator jumped a night or a weekend: the clock follows at once.
                self._anchor_sim, self._anchor_wall = step_end - self.step, self._monotonic()
            wait = (step_end - self._now()) / self.speed
            if wait > 0:
                await asyncio.sleep(wait)
            self._clock = step_end
            if ticks:
                yield ticks

    # --- generation (pure given the seed) ------------------------------------------------
    def take(self, n: int) -> list[Tick]:
        """The next `n` ticks, without waiting (tests, benchmarks)."""
        out: list[Tick] = []
        for step_end, ticks in self.steps():
            self._clock = step_end
            out.extend(ticks)
            if len(out) >= n:
                return out[:n]
        return out  # pragma: no cover - the generator is endless

    def steps(self) -> Iterator[tuple[float, list[Tick]]]:
        """Endless (step end epoch, ticks in time order) from the clock's position."""
        rng = self.rng
        t = self._clock
        day = kst_day(t)
        while True:
            bounds = self.sessions.bounds(day)
            if not bounds.trading or t >= bounds.close:
                day = self._next_day(day)
                t = self.sessions.bounds(day).open
                continue
            if t < bounds.open:
                t = bounds.open
            if t == bounds.open:
                yield t + self.step, self._edge_prints(t, 3.0)
                t += self.step
            auction = bounds.close - CLOSING_AUCTION
            while t < auction:
                end = min(t + self.step, auction)
                yield end, self._continuous(t, end, bounds.open, auction, rng)
                t = end
            yield bounds.close + self.step, self._edge_prints(bounds.close, 5.0)
            t = bounds.close

    def _next_day(self, day: int) -> int:
        # A new trading day: yesterday's last price is today's base price.
        self.prev_close = dict(self.price)
        self._set_limits()
        nxt = day + 1
        while not self.sessions.bounds(nxt).trading:
            nxt += 1
        return nxt

    def _set_limits(self) -> None:
        for symbol, prev in self.prev_close.items():
            band = krx.price_limits(Decimal(prev), instrument=self.instruments[symbol])
            self.limits[symbol] = (int(band.lower), int(band.upper))

    def _random_price(self, symbol: str) -> int:
        raw = math.exp(self.rng.uniform(math.log(1_000), math.log(300_000)))
        return int(
            krx.round_to_tick(Decimal(int(raw)), "down", instrument=self.instruments[symbol])
        )

    def _tick_size(self, price: int, instrument: str) -> int:
        key = (price, instrument)
        size = self._tick_cache.get(key)
        if size is None:
            size = self._tick_cache[key] = int(krx.tick_size(price, instrument=instrument))
        return size

    def _volume(self, factor: float) -> int:
        return max(1, int(self.rng.lognormvariate(3.0, 1.2) * factor))

    def _edge_prints(self, at: float, factor: float) -> list[Tick]:
        """One auction print per symbol at `at` (the open or the close)."""
        moment = dt.datetime.fromtimestamp(at, dt.UTC)
        ticks = []
        for symbol in self._symbols:
            price = self._walk(symbol, self.rng.choice((-1, 0, 0, 1)))
            ticks.append(Tick(symbol, moment, Decimal(price), self._volume(factor * 20)))
        return ticks

    def _walk(self, symbol: str, moves: int) -> int:
        price = self.price[symbol]
        instrument = self.instruments[symbol]
        for _ in range(abs(moves)):
            size = self._tick_size(price, instrument)
            if moves > 0:
                price += size
            else:
                # Below a band boundary the finer tick applies; the lower neighbour is on its grid.
                below = price - size
                size_below = self._tick_size(below, instrument) if below > 0 else size
                price = price - size_below if size_below < size else below
        lower, upper = self.limits[symbol]
        price = min(max(price, lower), upper)
        self.price[symbol] = price
        return price

    def _continuous(self, t0: float, t1: float, open_: float, auction: float, rng) -> list[Tick]:
        # U shape: 3x at the open and before the closing auction, 1x at midday.
        span = auction - open_
        x = (t0 - open_) / span
        shape = 1.0 + 2.0 * (math.exp(-x * 12) + math.exp(-(1 - x) * 12))
        mean = len(self._symbols) * self.rate * (t1 - t0) * shape
        count = _poisson(rng, mean)
        if not count:
            return []
        times = sorted(t0 + rng.random() * (t1 - t0) for _ in range(count))
        symbols = self._symbols
        ticks = []
        for at in times:
            symbol = symbols[rng.randrange(len(symbols))]
            move = rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
            price = self._walk(symbol, move)
            moment = dt.datetime.fromtimestamp(round(at, 6), dt.UTC)
            ticks.append(Tick(symbol, moment, Decimal(price), self._volume(shape)))
        return ticks


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
