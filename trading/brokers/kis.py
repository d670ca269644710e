"""The KIS broker: the Broker interface (trading/brokers/base.py) on a KIS account, through
kis.client.KISClient (settings KIS_*; TRADING_BROKER=kis selects it).

Sync over async. The Broker interface is synchronous (the OMS calls it from a database worker
thread, outside transactions); KISClient is async (httpx, redis.asyncio). The process keeps one
background event loop thread that owns the KISClient (its HTTP connection pool, token store and
rate limiter) and every broker call runs a coroutine there with
asyncio.run_coroutine_threadsafe and a timeout (CALL_TIMEOUT_SECONDS). Why not async_to_sync:
it would run each call on a fresh loop or the caller's, and the client's connections belong to
one loop. get_broker() makes a broker per call; they share the runtime (kis_runtime()), which
is rebuilt when the configuration changes (tests) and closed by close_runtime().

Ids. broker_order_id = "<KRX_FWDG_ORD_ORGNO>-<ODNO>" (the cancel needs both). A fill's
execution_id = "<ODNO>-<KIS's cumulative filled quantity after it>": KIS's daily-fills inquiry
gives each order's totals (tot_ccld_qty, tot_ccld_amt), not single executions, and its fill
notices carry no sequence number, so fills are applied as the difference between KIS's totals
and ours (trading.broker_sync.kis_apply_row); the same total seen twice (a notice and a poll,
a restart) has the same id and services.order_apply_fill applies it once.

submit(order) is idempotent on client_order_id. KIS has no field for our id, so:
- the broker id is remembered in Redis (kis:order-id:<client_order_id>, 3 days) the moment
  KIS answers, before the OMS stores it: an order whose id is known is never sent again;
- before the first send an attempt mark is set (kis:order-attempt:<client_order_id>). An order
  with an attempt mark but no id (a crash, or an ambiguous failure: timeout / 5xx after the
  request went out, when KIS may have placed it) is looked up first among today's orders at
  KIS: same symbol, side, quantity and price (0 for market), placed no earlier than a minute
  before the attempt, and not the broker id of any order of ours. Found: that order is ours
  (accepted, nothing sent). Not found: sent again. The same lookup runs for a SUBMITTED order
  older than LOOKUP_AFTER_SECONDS even without the mark (Redis lost).
- a new send is refused (REJECTED, code BROKER_UNRECONCILED, the disagreement as reason) while
  the last reconciliation with KIS disagrees and no operator overrode it
  (trading.broker_sync.trading_allowed). Adopting an order already at KIS and cancels are not.
Answers: KIS's refusal (rt_cd != 0) -> rejected with reason_code = msg_cd, reason = msg1; our
client's own input checks -> rejected INVALID_ORDER; unreachable, rate limited, refused
credentials -> BrokerError (the order stays SUBMITTED; recovery tries again). Fills are never
in the ack: notices and polling bring them (trading.broker_sync).

cancel(order): cancels all that remains at KIS, then applies the fills KIS reports for the order
(those made before the cancel) so none is lost when the order becomes CANCELED; KIS's refusal
(typically: nothing left to cancel) -> rejected with msg_cd / msg1, after the same fills.

open_orders(): real accounts: inquire-psbl-rvsecncl (what can still be canceled); virtual
accounts (KIS offers no such call): today's daily fills with something remaining.
fills(since): one BrokerFill per order with fills since that day: its totals so far
(execution_id "<ODNO>-<total>", quantity the total, price the average).
positions(), balance(): inquire-balance; balance().cash is the settled-after-D+2 cash
(prvs_rcdl_excc_amt), which is what our account's cash (moved at each fill) compares to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import threading
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from kis.client import KISClient, OrderFills, today_kst
from kis.config import KISConfig
from kis.errors import KISAuthError, KISError, KISNotSupported, KISRateLimited, KISUnavailable
from qbsite.exceptions import InvalidInput

from .base import (
    Broker,
    BrokerAck,
    BrokerBalance,
    BrokerError,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
)

logger = logging.getLogger("qb.trading.brokers.kis")

NAME = "kis"
CALL_TIMEOUT_SECONDS = 60.0  # above the client's own bounded retries
LOOKUP_AFTER_SECONDS = 2.0  # a SUBMITTED order older than this may have been sent before
LOOKUP_SLACK = dt.timedelta(seconds=60)  # KIS's clock vs ours, in the lookup by terms
MEMO_SECONDS = 3 * 24 * 3600
REASON_UNRECONCILED = "BROKER_UNRECONCILED"
_KEY_ID = "kis:order-id:"
_KEY_ATTEMPT = "kis:order-attempt:"
_SIDES = {"BUY": "buy", "SELL": "sell"}


def make_broker_order_id(org_no: str, order_no: str) -> str:
    return f"{org_no}-{order_no}"


def split_broker_order_id(value: str) -> tuple[str, str]:
    """(KRX_FWDG_ORD_ORGNO, ODNO) of a KIS broker_order_id; BrokerError when it is not one."""
    org_no, _, order_no = (value or "").rpartition("-")
    if not org_no or not order_no:
        raise BrokerError(f"{value!r} is not a KIS broker order id (ORGNO-ODNO).")
    return org_no, order_no


def execution_id(order_no: str, filled_total: int) -> str:
    return f"{order_no}-{filled_total}"


# --- the background loop ---------------------------------------------------------------------


class KISRuntime:
    """One event loop thread owning one KISClient (see the module doc)."""

    def __init__(self, config: KISConfig, *, redis_url: str) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="kis-broker-loop", daemon=True)
        self.thread.start()
        self.redis = None
        self.client: KISClient = self.call(self._open(redis_url), timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open(self, redis_url: str) -> KISClient:
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(redis_url)
        return KISClient(self.config, redis=self.redis)

    def call(self, coro, *, timeout: float = CALL_TIMEOUT_SECONDS):
        """Run `coro` on the loop; TimeoutError (after cancelling it) when it takes longer."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"KIS call still running after {timeout:g} s") from None

    def close(self) -> None:
        async def shut() -> None:
            await self.client.aclose()
            if self.redis is not None:
                await self.redis.aclose()

        try:
            self.call(shut(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


_runtime: KISRuntime | None = None
_runtime_lock = threading.Lock()


def kis_runtime(config: KISConfig | None = None) -> KISRuntime:
    """The process's KIS runtime for `config` (default: KISConfig.from_settings())."""
    global _runtime
    config = config or KISConfig.from_settings()
    with _runtime_lock:
        if _runtime is not None and _runtime.config != config:
            old, _runtime = _runtime, None
            old.close()
        if _runtime is None:
            _runtime = KISRuntime(config, redis_url=settings.REDIS_URL)
        return _runtime


def close_runtime() -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            old, _runtime = _runtime, None
            old.close()


# --- the broker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    broker_order_id: str
    row: OrderFills


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class KISBroker(Broker):
    """See the module docstring."""

    name = NAME

    def __init__(self, *, config: KISConfig | None = None) -> None:
        self.runtime = kis_runtime(config)
        self.config = self.runtime.config

    # --- plumbing ----------------------------------------------------------------------------

    def _call(self, coro, what: str):
        """A read: KISError -> BrokerError naming the call."""
        try:
            return self.runtime.call(coro)
        except TimeoutError as exc:
            raise BrokerError(f"KIS {what}: {exc}.") from None
        except KISError as exc:
            raise BrokerError(f"KIS {what} failed: {exc.message}") from None

    def kis_orders(self, start: dt.date | None = None, end: dt.date | None = None):
        """KIS's orders (with their fill totals) from `start` to `end` (default today, KST);
        new orders only (amend / cancel rows, which name an original order, are left out)."""
        end = end or today_kst()
        rows = self._call(self.runtime.client.daily_fills(start or end, end), "daily fills")
        return [row for row in rows if not row.original_order_no]

    def _memo(self, order) -> tuple[str, dt.datetime | None]:
        """(the broker id remembered for the order, when its first send was attempted)."""
        client = _redis()
        pipe = client.pipeline(transaction=False)
        pipe.get(_KEY_ID + order.client_order_id)
        pipe.get(_KEY_ATTEMPT + order.client_order_id)
        known, attempt = pipe.execute()
        when = dt.datetime.fromisoformat(_text(attempt)) if attempt else None
        return (_text(known) if known else ""), when

    def _remember(self, order, broker_order_id: str) -> None:
        _redis().set(_KEY_ID + order.client_order_id, broker_order_id, ex=MEMO_SECONDS)

    def find_placed(self, order, *, since: dt.datetime) -> Found | None:
        """The order of today's at KIS that `order` is, by its terms (see the module doc)."""
        from trading.models import Order

        price = order.limit_price if order.limit_price is not None else Decimal(0)
        side = _SIDES[order.side]
        earliest = since - LOOKUP_SLACK
        candidates = [
            row
            for row in self.kis_orders()
            if row.symbol == order.symbol_id
            and row.side == side
            and row.quantity == order.quantity
            and row.price == price
            and (row.time is None or row.time >= earliest)
        ]
        if not candidates:
            return None
        ids = {make_broker_order_id(row.org_no, row.order_no): row for row in candidates}
        claimed = set(
            Order.objects.filter(broker=NAME, broker_order_id__in=list(ids))
            .exclude(pk=order.pk)
            .values_list("broker_order_id", flat=True)
        )
        free = [(bid, row) for bid, row in ids.items() if bid not in claimed]
        if not free:
            return None
        bid, row = min(free, key=lambda item: (item[1].time or since, item[1].order_no))
        return Found(bid, row)

    # --- the interface -------------------------------------------------------------------------

    def submit(self, order) -> BrokerAck:
        known, attempted = self._memo(order)
        if order.broker_order_id or known:
            return BrokerAck(True, broker_order_id=order.broker_order_id or known)
        age = (timezone.now() - order.submitted_at).total_seconds() if order.submitted_at else 0
        if attempted is not None or age > LOOKUP_AFTER_SECONDS:
            found = self.find_placed(order, since=attempted or order.submitted_at)
            if found is not None:
                logger.warning(
                    "Order %s was already at KIS as %s; not sent again.",
                    order.client_order_id,
                    found.broker_order_id,
                )
                self._remember(order, found.broker_order_id)
                return BrokerAck(True, broker_order_id=found.broker_order_id)
        from trading.broker_sync import trading_allowed

        allowed, why = trading_allowed(NAME)
        if not allowed:
            return BrokerAck.rejected(REASON_UNRECONCILED, why)
        now = timezone.now()
        _redis().set(
            _KEY_ATTEMPT + order.client_order_id, now.isoformat(), ex=MEMO_SECONDS, nx=True
        )
        price = order.limit_price if order.order_type == "LIMIT" else None
        try:
            ack = self.runtime.call(
                self.runtime.client.order_cash(
                    _SIDES[order.side], order.symbol_id, order.quantity, price
                )
            )
        except InvalidInput as exc:
            return BrokerAck.rejected("INVALID_ORDER", exc.message)
        except (TimeoutError, KISUnavailable) as exc:
            if getattr(exc, "not_sent", False):
                raise BrokerError(
                    f"KIS could not be reached for order {order.client_order_id}."
                ) from None
            # KIS may have placed it: look once now; recovery looks again before resending.
            found = self.find_placed(order, since=now)
            if found is not None:
                self._remember(order, found.broker_order_id)
                return BrokerAck(True, broker_order_id=found.broker_order_id)
            raise BrokerError(
                f"KIS did not answer order {order.client_order_id} ({exc}); it may have been "
                "placed: recovery looks for it at KIS before sending it again."
            ) from None
        except (KISRateLimited, KISAuthError, KISNotSupported) as exc:
            raise BrokerError(f"KIS order {order.client_order_id}: {exc.message}") from None
        except KISError as exc:
            return BrokerAck.rejected(exc.msg_cd or "KIS_ERROR", exc.msg1 or exc.message)
        broker_order_id = make_broker_order_id(ack.org_no, ack.order_no)
        self._remember(order, broker_order_id)
        return BrokerAck(True, broker_order_id=broker_order_id)

    def _broker_id_of(self, order) -> str:
        """The order's KIS id: stored, remembered or found at KIS; "" when it never left;
        BrokerError when it may be at KIS but cannot be found yet."""
        if order.broker_order_id:
            return order.broker_order_id
        known, attempted = self._memo(order)
        if known:
            return known
        if attempted is None:
            return ""
        found = self.find_placed(order, since=attempted)
        if found is None:
            raise BrokerError(
                f"Order {order.client_order_id} may be at KIS but is not found there yet; "
                "the cancel is tried again later."
            )
        self._remember(order, found.broker_order_id)
        return found.broker_order_id

    def cancel(self, order) -> BrokerAck:
        from trading.broker_sync import kis_refresh_order

        broker_order_id = self._broker_id_of(order)
        if not broker_order_id:
            return BrokerAck(True)  # never sent: nothing to cancel at KIS
        org_no, order_no = split_broker_order_id(broker_order_id)
        refused = None
        try:
            self.runtime.call(self.runtime.client.order_cancel(org_no, order_no))
        except TimeoutError as exc:
            raise BrokerError(f"KIS cancel of {order.client_order_id}: {exc}.") from None
        except (KISUnavailable, KISRateLimited, KISAuthError) as exc:
            raise BrokerError(f"KIS cancel of {order.client_order_id}: {exc.message}") from None
        except KISError as exc:
            refused = BrokerAck.rejected(
                exc.msg_cd or "KIS_ERROR", exc.msg1 or exc.message, broker_order_id=broker_order_id
            )
        # The fills made before the cancel, applied now: a CANCELED order takes no more.
        kis_refresh_order(order_id=order.pk, broker=self, broker_order_id=broker_order_id)
        return refused or BrokerAck(True, broker_order_id=broker_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        from trading.models import Order

        if self.config.env == "real":
            rows = self._call(self.runtime.client.cancellable_orders(), "cancellable orders")
            found = [
                (r.org_no, r.order_no, r.symbol, r.side, r.quantity, r.price, r.filled)
                for r in rows
            ]
        else:
            found = [
                (r.org_no, r.order_no, r.symbol, r.side, r.quantity, r.price, r.filled)
                for r in self.kis_orders()
                if r.remaining > 0 and not r.cancelled
            ]
        ids = [make_broker_order_id(org, odno) for org, odno, *_ in found]
        ours = dict(
            Order.objects.filter(broker=NAME, broker_order_id__in=ids).values_list(
                "broker_order_id", "client_order_id"
            )
        )
        return [
            BrokerOrder(
                broker_order_id=bid,
                client_order_id=ours.get(bid, ""),
                symbol=symbol,
                side=side.upper(),
                order_type="LIMIT" if price else "MARKET",
                quantity=quantity,
                limit_price=price or None,
                filled_quantity=filled,
                status="PARTIALLY_FILLED" if filled else "ACCEPTED",
            )
            for bid, (_, _, symbol, side, quantity, price, filled) in zip(ids, found, strict=True)
        ]

    def fills(self, since: dt.datetime | None = None) -> list[BrokerFill]:
        """One record per KIS order with fills: its TOTAL filled quantity and average price
        (KIS's daily inquiry gives totals per order, not single executions). For reports and
        comparisons only: never apply these through services.order_apply_fill; the fills of an
        order are applied as differences of those totals (trading.broker_sync.kis_apply_row),
        which is also where the execution ids `<ODNO>-<cumulative quantity>` come from."""
        start = since.astimezone(dt.timezone(dt.timedelta(hours=9))).date() if since else None
        result = []
        for row in self.kis_orders(start):
            if row.filled <= 0:
                continue
            amount = row.filled_amount or row.average_price * row.filled
            result.append(
                BrokerFill(
                    execution_id=execution_id(row.order_no, row.filled),
                    quantity=row.filled,
                    price=(amount / row.filled).quantize(Decimal("0.01")),
                    time=row.time or timezone.now(),
                    broker_order_id=make_broker_order_id(row.org_no, row.order_no),
                )
            )
        return result

    def _balance(self):
        return self._call(self.runtime.client.balance(), "balance")

    def positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(symbol=p.symbol, quantity=p.quantity, average_price=p.average_price)
            for p in self._balance().positions
            if p.quantity > 0
        ]

    def balance(self) -> BrokerBalance:
        balance = self._balance()
        return BrokerBalance(
            cash=balance.cash_d2,
            details={
                "deposit": balance.cash,
                "total_value": balance.total_value,
                "net_assets": balance.net_assets,
            },
        )

    def account(self):
        """Positions and cash in one call: (positions, balance)."""
        balance = self._balance()
        positions = [
            BrokerPosition(symbol=p.symbol, quantity=p.quantity, average_price=p.average_price)
            for p in balance.positions
            if p.quantity > 0
        ]
        return positions, BrokerBalance(cash=balance.cash_d2, details={"deposit": balance.cash})


def notice_websocket(config: KISConfig | None = None):
    """The fill-notice listener's consumer ("orders notices") of the process's shared KIS
    WebSocket session (kis.ws.session_consumer): KIS allows one session per app key, so a
    process that also runs the KIS feed shares it with the feed. Nothing opens before its first
    subscribe(); its close() leaves the session (closed with its last consumer)."""
    from kis.ws import session_consumer

    return session_consumer("orders notices", config=config or KISConfig.from_settings())


__all__ = [
    "NAME",
    "KISBroker",
    "close_runtime",
    "execution_id",
    "kis_runtime",
    "make_broker_order_id",
    "notice_websocket",
    "split_broker_order_id",
]
