"""The orders engine: trading signals -> orders (trading.oms), and open paper orders -> fills.

Consumes:
- `trading_signal` (data {"signal_id", ...}): oms.order_from_signal in one hop to the database
  thread (sizing, checks, the order and the signal's outcome in one transaction, then the
  broker). A replayed event finds the signal handled and changes nothing.
- `market_data_received` (data {"symbol", "quote"}; the collector throttles it per symbol):
  for a symbol with open paper orders, oms.match_open_orders (the paper broker reads the quote
  hash itself: the event's quote carries no previous close). Symbols without open paper orders
  cost one set lookup: `watched`, rebuilt at setup and by every sweep, grown by the engine's
  own orders and by `order_placed` events (orders placed elsewhere, e.g. through the API),
  shrunk when a match leaves a symbol with none.
- `order_placed`: see above.

Crash-only: setup() is oms.recover() (PENDING signals, NEW / SUBMITTED / CANCEL_PENDING
orders, open paper orders against the current quotes). The loop repeats it every
ORDERS_SWEEP_SECONDS (10) for what is older than ORDERS_SWEEP_MIN_AGE_SECONDS (5): the channel
layer delivers at most once, so a lost trading_signal is ordered by the next sweep instead.

Handlers catch and log their own errors (qb.engine.orders -> system_logs); a database outage
is left to the runtime, which waits it out (the sweep then finishes what was missed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from channels.db import database_sync_to_async
from django.conf import settings

from marketdata import krx
from qbsite.engine_base import Engine
from qbsite.engines import DB_ERRORS
from qbsite.events import EventType
from qbsite.exceptions import QBError
from trading import oms
from trading.brokers.paper import NAME as PAPER
from trading.states import OPEN


class EventPayloadError(ValueError):
    pass


def _signal_id(envelope) -> int:
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict):
        raise EventPayloadError("the event has no data object")
    value = data.get("signal_id")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EventPayloadError(f"data.signal_id {value!r} is not a positive integer")
    return value


def _symbol(envelope) -> str | None:
    data = envelope.get("data") if isinstance(envelope, dict) else None
    symbol = data.get("symbol") if isinstance(data, dict) else None
    return symbol if isinstance(symbol, str) and symbol else None


class OrdersEngine(Engine):
    name = "orders"
    subscribes = (
        EventType.TRADING_SIGNAL,
        EventType.MARKET_DATA_RECEIVED,
        EventType.ORDER_PLACED,
    )
    has_loop = True

    def __init__(self) -> None:
        super().__init__()
        self.watched: set[str] = set()
        self.counts: collections.Counter = collections.Counter()
        self.sweep_seconds = float(getattr(settings, "ORDERS_SWEEP_SECONDS", 10))
        self.sweep_min_age = float(getattr(settings, "ORDERS_SWEEP_MIN_AGE_SECONDS", 5))

    async def setup(self) -> None:
        # A sell's tax needs the KRX calendar (seconds to build): built off the event loop,
        # before the first fill needs it.
        await asyncio.to_thread(krx._calendar)
        recovered = await database_sync_to_async(oms.recover)()
        self.watched = await database_sync_to_async(oms.open_paper_symbols)()
        done = {kind: n for kind, n in recovered.items() if n}
        self.log.info(
            "Orders engine ready: recovered %s; watching %d symbol(s) with open paper orders.",
            done or "nothing",
            len(self.watched),
        )

    async def handle(self, envelope: dict) -> None:
        kind = envelope.get("event_type") if isinstance(envelope, dict) else None
        try:
            if kind == EventType.MARKET_DATA_RECEIVED:
                await self.on_quote(envelope)
            elif kind == EventType.TRADING_SIGNAL:
                await self.on_signal(envelope)
            elif kind == EventType.ORDER_PLACED:
                self.on_order_placed(envelope)
        except DB_ERRORS:
            raise  # the runtime waits for PostgreSQL; the next sweep finishes the work
        except EventPayloadError as exc:
            self.counts["rejected"] += 1
            self.log.warning(
                "Rejected a %s event: %s.",
                kind,
                exc,
                extra={"metadata": {"event": str(envelope)[:500]}},
            )
        except QBError as exc:
            self.counts["failed"] += 1
            self.log.warning("%s event not handled: %s", kind, exc.message)
        except Exception:
            self.counts["failed"] += 1
            self.log.exception("%s event failed; the next sweep retries what it left.", kind)

    async def on_signal(self, envelope: dict) -> None:
        signal_id = _signal_id(envelope)
        order = await database_sync_to_async(oms.order_from_signal)(signal_id=signal_id)
        self.counts["signals"] += 1
        if order is not None and order.broker == PAPER and order.status in OPEN:
            self.watched.add(order.symbol_id)

    async def on_quote(self, envelope: dict) -> None:
        symbol = _symbol(envelope)
        if symbol is None or symbol not in self.watched:
            return
        self.counts["matches"] += 1
        left = await database_sync_to_async(oms.match_open_orders)(symbol=symbol)
        if not left:
            self.watched.discard(symbol)

    def on_order_placed(self, envelope: dict) -> None:
        data = envelope.get("data") or {}
        symbol = _symbol(envelope)
        if symbol and data.get("broker") == PAPER:
            self.watched.add(symbol)

    async def sweep(self) -> dict:
        counts = await database_sync_to_async(oms.recover)(min_age=self.sweep_min_age)
        self.watched |= await database_sync_to_async(oms.open_paper_symbols)()
        done = {kind: n for kind, n in counts.items() if n and kind != "matched"}
        if done:
            self.log.warning("Sweep finished work left behind: %s.", done)
        self.counts["sweeps"] += 1
        return counts

    async def loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.sweep_seconds)
            if self.stopping.is_set():
                return
            try:
                await self.sweep()
            except DB_ERRORS:
                raise
            except Exception:
                self.log.exception("Orders sweep failed; trying again next period.")

    def stats(self) -> dict:
        return {"watched": len(self.watched), **self.counts}


__all__ = ["OrdersEngine"]
