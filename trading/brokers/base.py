"""The broker interface: what the order management system (trading/oms.py) asks of a broker.

A broker is a synchronous object (the OMS calls it from a worker thread, never from the event
loop, and never inside a database transaction: a slow or dead broker must not hold locks).

    submit(order) -> BrokerAck
        Send one order. IDEMPOTENT on order.client_order_id: submitting the same order again
        (a restart that does not know whether the first submit arrived) makes no second order
        at the broker and answers with the same broker_order_id. The ack says accepted (with
        the broker's id and the fills known now, if any) or rejected (reason_code + reason).
        Fills carry the broker's execution_id; the OMS applies each through
        services.order_apply_fill, which applies an (order, execution_id) once, so a fill
        reported again is never counted twice.
    cancel(order) -> BrokerAck
        Ask the broker to cancel. Accepted = the broker confirms the cancel; rejected = it
        refused (typically: already filled), with the reason. Idempotent too.
    open_orders() -> list[BrokerOrder]     the orders the broker may still fill
    fills(since=None) -> list[BrokerFill]  executions (since an aware datetime)
    positions() -> list[BrokerPosition]    holdings
    balance() -> BrokerBalance             cash (KRW)

A broker that cannot be reached raises BrokerError: the order stays where it was (SUBMITTED,
CANCEL_PENDING) and the OMS's recovery tries again; nothing is lost.

Also here, shared by the brokers and the OMS: `market_quote(symbol)`, the latest quote from
Redis and the market's clock to judge its age by (see there).
"""

from __future__ import annotations

import abc
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from qbsite.exceptions import QBError

logger = logging.getLogger("qb.trading.brokers")


class BrokerError(QBError):
    """The broker could not be reached or answered something unusable."""

    status_code = 503
    code = "broker_unavailable"


@dataclass(frozen=True, slots=True)
class BrokerFill:
    """One execution at the broker."""

    execution_id: str
    quantity: int
    price: Decimal
    time: dt.datetime
    broker_order_id: str = ""


@dataclass(frozen=True, slots=True)
class BrokerAck:
    """The broker's answer to submit() or cancel()."""

    accepted: bool
    broker_order_id: str = ""
    reason_code: str = ""
    reason: str = ""
    fills: tuple[BrokerFill, ...] = ()

    @classmethod
    def rejected(cls, code: str, reason: str, *, broker_order_id: str = "") -> BrokerAck:
        return cls(False, broker_order_id=broker_order_id, reason_code=code, reason=reason)


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    broker_order_id: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: int
    limit_price: Decimal | None
    filled_quantity: int
    status: str


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    symbol: str
    quantity: int
    average_price: Decimal


@dataclass(frozen=True, slots=True)
class BrokerBalance:
    cash: Decimal
    currency: str = "KRW"
    details: dict = field(default_factory=dict)


class Broker(abc.ABC):
    """See the module docstring for the contract of each method."""

    name: str = ""

    @abc.abstractmethod
    def submit(self, order) -> BrokerAck: ...

    @abc.abstractmethod
    def cancel(self, order) -> BrokerAck: ...

    @abc.abstractmethod
    def open_orders(self) -> list[BrokerOrder]: ...

    @abc.abstractmethod
    def fills(self, since: dt.datetime | None = None) -> list[BrokerFill]: ...

    @abc.abstractmethod
    def positions(self) -> list[BrokerPosition]: ...

    @abc.abstractmethod
    def balance(self) -> BrokerBalance: ...


# --- the market as brokers and checks see it ---------------------------------------------------

COLLECTOR_ENGINE = "collector"


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def parse_market_now(raw_stats, wall: dt.datetime) -> dt.datetime:
    """The market clock from the collector heartbeat's stats JSON (its last_tick_time: the
    feed's time of the newest tick it accepted), or `wall` when there is none or it is bad."""
    if not raw_stats:
        return wall
    try:
        stats = json.loads(raw_stats)
        text = stats.get("last_tick_time") if isinstance(stats, dict) else None
        if not text:
            return wall
        moment = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return wall
    return moment if moment.utcoffset() is not None else wall


def market_quote(symbol: str, *, client=None) -> tuple[dict | None, dt.datetime]:
    """(the latest quote of `symbol` as marketdata.buffer.parse_quote gives it, or None;
    the market's clock now) in one Redis round trip.

    The market's clock is the collector's: the feed time of the newest tick it accepted, read
    from its heartbeat (heartbeat:collector, renewed every few seconds, gone when the collector
    is). A quote's age is measured on that clock, not the wall clock: the simulated feed
    replays the last session at any hour (its ticks are hours behind the wall clock at night)
    and a CSV replay runs in the past, yet their quotes are fresh for the market they belong
    to. Without a running collector the wall clock is used, so quotes go stale when the feed
    stops, which is what STALE_QUOTE is for.
    """
    from marketdata.buffer import parse_quote
    from marketdata.keys import heartbeat_key, quote_key

    client = client or _redis()
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(quote_key(symbol))
    pipe.hget(heartbeat_key(COLLECTOR_ENGINE), "stats")
    raw_quote, raw_stats = pipe.execute()
    wall = dt.datetime.now(dt.UTC)
    try:
        quote = parse_quote(raw_quote)
    except (ValueError, ArithmeticError) as exc:
        # An unreadable hash is no quote (the checks then say NO_QUOTE); said once per call.
        logger.warning("Unreadable quote %s: %s", quote_key(symbol), exc)
        quote = None
    return quote, parse_market_now(raw_stats, wall)


__all__ = [
    "Broker",
    "BrokerAck",
    "BrokerBalance",
    "BrokerError",
    "BrokerFill",
    "BrokerOrder",
    "BrokerPosition",
    "market_quote",
    "parse_market_now",
]
