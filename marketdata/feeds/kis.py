"""The KIS WebSocket feed: executed prices (H0STCNT0) of up to 41 symbols, as Tick batches.

    feed = KISWebSocketFeed(["005930", "000660"])   # or settings.KIS_FEED_SYMBOLS
    async for ticks in feed.batches():               # one list per KIS data frame
        ...
    await feed.close()

- Symbols: the `symbols` given, else settings.KIS_FEED_SYMBOLS (a list, or "005930,000660");
  at most 41 (kis.frames.MAX_REGISTRATIONS: KIS's registrations per session), 40 when the KIS
  broker's fill notices share the session (TRADING_BROKER=kis with KIS_HTS_ID).
- The client: a consumer ("kis feed") of the process's shared KIS WebSocket session
  (kis.ws.session_consumer: KISConfig.from_settings(), KIS_WS_URL overrides the host; the
  approval key of kis.token.TokenStore, cached in Redis). KIS allows one session per app key:
  the orders engine's fill-notice listener in the same process shares it, and the 41
  registrations are counted across both. Or pass `client=` (a kis.ws.KISWebSocket read by the
  feed alone, or another KISSessionConsumer). stats() figures connections / drops / bad_frames
  are the session's; dropped_batches counts batches dropped because the feed fell behind.
- Malformed frames are logged by the client (WARNING on "qb.kis", so system_logs) and skipped;
  drops are reconnected with backoff and every symbol subscribed again.
- Clock: the later of the latest print's time and the wall clock. The wall clock so that candles
  of quiet symbols close on time; the prints' time so that a KIS clock a little ahead of ours
  does not make its prints look like the future to the collector's validator.
- reference_prices(): each symbol's previous close, learnt from its prints (price - PRDY_VRSS);
  empty until the first print of a symbol.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal

from kis.frames import MAX_REGISTRATIONS, TR_TRADES
from kis.ws import KISSessionConsumer, KISWebSocket, session_consumer
from marketdata.feeds.base import Feed, FeedError, parse_speed

logger = logging.getLogger("qb.collector")


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def configured_symbols(value) -> list[str]:
    """KIS_FEED_SYMBOLS (a list or a comma-separated text) -> the symbols, checked."""
    if value is None:
        value = []
    if isinstance(value, str):
        value = value.split(",")
    symbols: list[str] = []
    for raw in value:
        symbol = str(raw).strip()
        if not symbol:
            continue
        if not (symbol.isascii() and symbol.isalnum()):
            raise FeedError(f"KIS feed symbol {symbol!r} is not a KRX code (e.g. 005930).")
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise FeedError(
            "The KIS feed has no symbols: set KIS_FEED_SYMBOLS (e.g. 005930,000660), "
            f"at most {MAX_REGISTRATIONS}."
        )
    if len(symbols) > MAX_REGISTRATIONS:
        raise FeedError(
            f"The KIS feed got {len(symbols)} symbols; KIS allows at most {MAX_REGISTRATIONS} "
            "registrations per session."
        )
    return symbols


def _check_room_for_notices(symbols: list[str]) -> None:
    """With the KIS broker's fill notices on (TRADING_BROKER=kis and KIS_HTS_ID), they take one
    of the app key's 41 registrations: say so now rather than have whichever subscribes second
    refused at run time."""
    from django.conf import settings

    notices = getattr(settings, "TRADING_BROKER", "") == "kis" and getattr(
        settings, "KIS_HTS_ID", ""
    )
    if notices and len(symbols) > MAX_REGISTRATIONS - 1:
        raise FeedError(
            f"The KIS feed got {len(symbols)} symbols, but with TRADING_BROKER=kis and KIS_HTS_ID "
            f"set the fill notices take one of the {MAX_REGISTRATIONS} registrations KIS allows "
            f"per app key: KIS_FEED_SYMBOLS may hold at most {MAX_REGISTRATIONS - 1}."
        )


class KISWebSocketFeed(Feed):
    name = "kis"

    def __init__(
        self,
        symbols: Iterable[str] | None = None,
        *,
        client: KISWebSocket | KISSessionConsumer | None = None,
        speed=None,
        wall_clock: Callable[[], dt.datetime] = _wall,
    ) -> None:
        """speed: accepted for COLLECTOR_SPEED, but a live feed runs at 1x only."""
        if speed is not None and parse_speed(speed) != 1.0:
            raise FeedError(f"COLLECTOR_SPEED={speed!r}: the KIS feed is live and runs at 1x.")
        if symbols is None:
            from django.conf import settings

            symbols = getattr(settings, "KIS_FEED_SYMBOLS", None)
        self._symbols = configured_symbols(symbols)
        _check_room_for_notices(self._symbols)
        self._wall = wall_clock
        self._latest: dt.datetime | None = None
        self._prev_close: dict[str, Decimal] = {}
        self.client = client if client is not None else session_consumer("kis feed")
        self.ticks_received = 0

    # --- Feed ------------------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def now(self) -> dt.datetime:
        wall = self._wall()
        latest = self._latest
        return latest if latest is not None and latest > wall else wall

    def reference_prices(self) -> dict[str, Decimal]:
        return dict(self._prev_close)

    async def batches(self):
        for symbol in self._symbols:
            await self.client.subscribe(TR_TRADES, symbol)
        async for batch in self.client.batches():
            if batch.tr_id != TR_TRADES:
                continue  # a shared session's fill notices are not market data
            ticks = []
            prev = self._prev_close
            for trade in batch.records:
                tick = trade.tick
                ticks.append(tick)
                prev[tick.symbol] = trade.prev_close
                if self._latest is None or tick.time > self._latest:
                    self._latest = tick.time
            self.ticks_received += len(ticks)
            if ticks:
                yield ticks

    def stats(self) -> dict:
        client = self.client
        return {
            "ticks_received": self.ticks_received,
            "connections": client.connections,
            "drops": client.drops,
            "bad_frames": client.bad_frames,
            "rejected_registrations": client.rejected,
            "dropped_batches": getattr(client, "dropped_batches", 0),
        }

    async def close(self) -> None:
        await self.client.close()
