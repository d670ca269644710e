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

With the KIS broker (TRADING_BROKER=kis; trading.broker_sync):
- setup() reconciles with KIS first (missing fills applied, external orders recorded, positions
  compared; the result stored), then recovers. While the reconciliation disagrees, the KIS
  broker sends no new order (they are REJECTED with BROKER_UNRECONCILED and the reason) until
  a reconciliation agrees or an operator overrides in the admin. One that could not reach KIS
  is tried again at each sweep.
- fill notices (H0STCNI0 real / H0STCNI9 virtual, tr_key KIS_HTS_ID) are listened to on a KIS
  WebSocket session; each batch wakes the loop, which brings the open KIS orders to KIS's
  figures at once (broker_sync.kis_refresh). Without KIS_HTS_ID there is no listener.
- the polling fallback: every ORDERS_SWEEP_SECONDS while KIS orders are open, the same refresh,
  so nothing depends on the WebSocket alone.
KIS allows one WebSocket session per app key: the listener is a consumer of the process's
shared session (trading.brokers.kis.notice_websocket(), kis.ws.session_consumer), which the KIS
feed of the same process (runengines with COLLECTOR_FEED=kis) also uses; the 41 registrations
are counted across both. `notice_client=` takes another client (a kis.ws.KISWebSocket or
KISSessionConsumer: tests).

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
from qbsite.events import EventType, envelope_preview
from qbsite.exceptions import QBError
from trading import broker_sync, oms
from trading.brokers.paper import NAME as PAPER
from trading.models import BrokerSyncStatus
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

    def __init__(self, *, notice_client=None) -> None:
        super().__init__()
        self.watched: set[str] = set()
        self.counts: collections.Counter = collections.Counter()
        self.sweep_seconds = float(getattr(settings, "ORDERS_SWEEP_SECONDS", 10))
        self.sweep_min_age = float(getattr(settings, "ORDERS_SWEEP_MIN_AGE_SECONDS", 5))
        self.kis = getattr(settings, "TRADING_BROKER", PAPER) == broker_sync.KIS
        self.sync_status = ""
        self.kick = asyncio.Event()  # a fill notice: refresh the KIS orders now
        self.notice_client = notice_client
        self._listener: asyncio.Task | None = None

    async def reconcile(self) -> None:
        report = await database_sync_to_async(broker_sync.broker_reconcile)()
        self.sync_status = report.status
        self.counts["reconciliations"] += 1
        if report.agreed:
            self.log.info(
                "Reconciled with KIS: %d applied, %d external.",
                len(report.applied),
                len(report.external),
            )
        else:
            self.log.error("KIS reconciliation: %s; no new order goes to KIS.", report.reason)

    async def setup(self) -> None:
        # A sell's tax needs the KRX calendar (seconds to build): built off the event loop,
        # before the first fill needs it.
        await asyncio.to_thread(krx._calendar)
        if self.kis:
            await self.reconcile()
            self._start_listener()
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
                extra={"metadata": {"event": envelope_preview(envelope)}},
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

    # --- KIS fill notices and polling ------------------------------------------------------

    def _start_listener(self) -> None:
        if self.notice_client is None:
            if not getattr(settings, "KIS_HTS_ID", ""):
                self.log.warning(
                    "KIS_HTS_ID is not set: no fill notices; KIS fills come by polling every %g s.",
                    self.sweep_seconds,
                )
                return
            from trading.brokers.kis import notice_websocket

            self.notice_client = notice_websocket()
        self._listener = asyncio.create_task(self.listen_notices())

    async def listen_notices(self) -> None:
        """Fill notices -> wake the loop (the refresh reads KIS's totals)."""
        from kis.config import KISConfig
        from kis.errors import KISError
        from kis.frames import TR_FILLS

        config = await asyncio.to_thread(KISConfig.from_settings)
        try:
            await self.notice_client.subscribe(config.tr_id("ws_fill_notice"), config.hts_id)
            async for batch in self.notice_client.batches():
                if batch.tr_id not in TR_FILLS:
                    continue  # a shared session's trades are the feed's
                for notice in batch.records:
                    self.counts["notices"] += 1
                    self.log.info(
                        "KIS notice: %s %s %s %d @ %s (order %s)",
                        notice.kind,
                        notice.side,
                        notice.symbol,
                        notice.quantity,
                        notice.price,
                        notice.order_no,
                    )
                self.kick.set()
        except asyncio.CancelledError:
            raise
        except KISError as exc:  # e.g. no registration left on the shared session
            self.log.error("KIS notice listener stopped: %s Fills come by polling.", exc.message)
        except Exception:
            self.log.exception("KIS notice listener stopped; fills come by polling.")
        # Stopped for good: leave the shared session (close() again at stop() is harmless).
        with contextlib.suppress(Exception):
            await self.notice_client.close()

    async def refresh_kis(self) -> None:
        result = await database_sync_to_async(broker_sync.kis_refresh)()
        self.counts["kis_refreshes"] += 1
        if result.applied:
            self.counts["kis_applied"] += len(result.applied)

    async def stop(self) -> None:
        if self._listener is not None:
            if self.notice_client is not None:
                await self.notice_client.close()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._listener, 5)

    async def sweep(self) -> dict:
        if self.kis and self.sync_status == BrokerSyncStatus.UNREACHABLE:
            await self.reconcile()
        counts = await database_sync_to_async(oms.recover)(min_age=self.sweep_min_age)
        if self.kis:
            await self.refresh_kis()
        self.watched |= await database_sync_to_async(oms.open_paper_symbols)()
        done = {kind: n for kind, n in counts.items() if n and kind != "matched"}
        if done:
            self.log.warning("Sweep finished work left behind: %s.", done)
        self.counts["sweeps"] += 1
        return counts

    async def _wait(self) -> bool:
        """Until the sweep is due (False) or a fill notice came (True), or stopping."""
        stopping = asyncio.ensure_future(self.stopping.wait())
        kicked = asyncio.ensure_future(self.kick.wait())
        try:
            await asyncio.wait(
                {stopping, kicked},
                timeout=self.sweep_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()
            kicked.cancel()
        return self.kick.is_set()

    async def loop(self) -> None:
        while not self.stopping.is_set():
            kicked = await self._wait()
            if self.stopping.is_set():
                return
            try:
                if kicked:
                    self.kick.clear()
                    await self.refresh_kis()
                else:
                    await self.sweep()
            except DB_ERRORS:
                raise
            except Exception:
                self.log.exception("Orders sweep failed; trying again next period.")

    def stats(self) -> dict:
        stats = {"watched": len(self.watched), **self.counts}
        if self.kis:
            stats["kis_sync"] = self.sync_status
        return stats


__all__ = ["OrdersEngine"]
