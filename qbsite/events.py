"""The event bus every engine imports: one call publishes an event to both of its channels.

`publish(event_type, data, source=...)` builds the envelope
{event_type, source, timestamp (UTC, ISO 8601), data, correlation_id} and sends it

- to the Channels group ``events.<event_type>`` as ``{"type": "event.message", "event": envelope}``
  (a consumer added to the group handles it in ``async def event_message(self, message)``), and
- to the Redis Pub/Sub channel ``events:<event_type>`` as the envelope's JSON text, so that
  ``redis-cli SUBSCRIBE`` and programs outside Django see the same stream (DESIGN.md, "Events").

Both are notifications, delivered at most once; what must survive lives in PostgreSQL.
Called inside ``transaction.atomic()``, publish() sends when the transaction commits and not at
all if it rolls back, so nobody hears about a row that does not exist. A bad event type or a
payload that cannot be JSON is refused at once, when publish() is called, not at commit.
Payload values: JSON types, plus Decimal (sent as a string, exact), aware datetimes and dates
(ISO 8601) and UUIDs (strings). Anything else is an error naming where it is in the payload.

Full channels. channels_redis 4.3's group_send never raises ChannelFull: a member channel at
capacity is skipped for that message (the others still get it) and channels_redis logs it at
INFO on "channels_redis.core". Other layers may raise ChannelFull from group_send; we catch it,
warn on "qb.events" and go on. Either way the Pub/Sub mirror is sent first and is not lost,
and the caller never sees the exception.

Many events at once (the collector): ``await apublish_many([(type, data), ...], source=...)``
sends all the Pub/Sub mirrors in one pipeline round trip, then the group sends.

Async code (consumers, engines) uses ``await apublish(...)``: publish() cannot run on a thread
that runs an event loop (asgiref refuses), and async code cannot hold a database transaction
open anyway. Sync code called from async code through sync_to_async uses publish().
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import json
import logging
import math
import threading
import uuid
import weakref
from collections.abc import Mapping
from decimal import Decimal

import redis
import redis.asyncio
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction

from qbsite.exceptions import QBError

logger = logging.getLogger("qb.events")


class EventType(enum.StrEnum):
    """Every event QB publishes (DESIGN.md, "Events"). New kinds are added here, nowhere else."""

    MARKET_DATA_RECEIVED = "market_data_received"
    CANDLE_CLOSED = "candle_closed"
    INDICATORS_UPDATED = "indicators_updated"
    TRADING_SIGNAL = "trading_signal"
    ORDER_PLACED = "order_placed"
    ORDER_EXECUTED = "order_executed"
    ORDER_REJECTED = "order_rejected"
    POSITION_UPDATED = "position_updated"
    RISK_ALERT = "risk_alert"
    TRADING_STATE_CHANGED = "trading_state_changed"
    HEARTBEAT = "heartbeat"


EVENT_TYPES = frozenset(event.value for event in EventType)

# The Channels message type; Channels maps it to the consumer method `event_message`.
EVENT_MESSAGE_TYPE = "event.message"


class EventError(QBError):
    code = "event_invalid"


class UnknownEventType(EventError):
    code = "event_unknown"


class EventPayloadError(EventError):
    code = "event_payload"


def _event_type(event_type) -> str:
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise UnknownEventType(
            f"Unknown event type {event_type!r}; known types: {', '.join(sorted(EVENT_TYPES))}.",
            details={"event_type": repr(event_type)},
        )
    return str.__str__(event_type)


def group_name(event_type: str) -> str:
    """The Channels group for an event type (group names cannot hold ':')."""
    return f"events.{_event_type(event_type)}"


def pubsub_channel(event_type: str) -> str:
    """The Redis Pub/Sub channel mirroring an event type (a DESIGN.md key-name contract)."""
    return f"events:{_event_type(event_type)}"


def _jsonable(value, path: str):
    """A copy of `value` made of JSON types only (also what msgpack in channels_redis takes)."""
    # bool before int (bool is an int); exact types out, so str/int enums travel as values.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventPayloadError(f"{path} is {value}: JSON has no NaN or Infinity.")
        return float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EventPayloadError(f"{path} is Decimal({value}): not a finite number.")
        return str(value)
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise EventPayloadError(
                f"{path} is a naive datetime ({value.isoformat()}): give it a time zone."
            )
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventPayloadError(f"{path} has a key {key!r} that is not a string.")
            result[str.__str__(key)] = _jsonable(item, f"{path}.{key}")
        return result
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise EventPayloadError(
        f"{path} is a {type(value).__name__}, which an event cannot carry "
        "(JSON types, Decimal, aware datetime, date and UUID only).",
        details={"key": path, "type": type(value).__name__},
    )


def build_envelope(event_type, data, *, source: str, correlation_id=None) -> dict:
    """The envelope publish() sends, validated and made of JSON types only."""
    name = _event_type(event_type)
    if not isinstance(data, Mapping):
        raise EventPayloadError(
            f"The data of a {name} event must be a dict, got {type(data).__name__}."
        )
    if not isinstance(source, str) or not source.strip():
        raise EventError(f"The source of a {name} event must be a non-empty string (who sent it).")
    if isinstance(correlation_id, uuid.UUID):
        correlation_id = str(correlation_id)
    elif correlation_id is not None and not isinstance(correlation_id, str):
        raise EventError(
            f"correlation_id must be a string or UUID, got {type(correlation_id).__name__}."
        )
    return {
        "event_type": name,
        "source": str.__str__(source),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "data": _jsonable(data, "data"),
        "correlation_id": correlation_id,
    }


def envelope_correlation_id(envelope) -> str | None:
    """The correlation_id of a received envelope (None when absent or not a string), for a
    handler to carry on to the events it publishes in turn."""
    value = envelope.get("correlation_id") if isinstance(envelope, Mapping) else None
    return value if isinstance(value, str) else None


def envelope_preview(value, limit: int = 500) -> str:
    """A received event as text, shortened to `limit` characters: what a handler logs (to
    system_logs) about an event it rejects, never the whole of a huge payload."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _encode(envelope: dict) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- Redis clients -------------------------------------------------------------------------
# One pool per process for sync callers. Async clients belong to the event loop that made
# them (redis.asyncio connections cannot move between loops), so there is one per loop.
_sync_clients: dict[str, redis.Redis] = {}
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        with _sync_lock:
            client = _sync_clients.get(url)
            if client is None:
                client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url))
                _sync_clients[url] = client
    return client


def _aredis() -> redis.asyncio.Redis:
    url = settings.REDIS_URL
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(url)
    if client is None:
        client = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool.from_url(url))
        per_loop[url] = client
    return client


def _channel_message(envelope: dict) -> dict:
    return {"type": EVENT_MESSAGE_TYPE, "event": envelope}


def _warn_full(envelope: dict, exc: ChannelFull) -> None:
    logger.warning(
        "Channel layer full: %s event from %s not delivered to group %s (%s); "
        "the Pub/Sub mirror was sent.",
        envelope["event_type"],
        envelope["source"],
        group_name(envelope["event_type"]),
        exc or "ChannelFull",
    )


class _Sender:
    """The group sends of sync code running beside an event loop (engines' database threads).

    Without it, every publish() on such a thread blocks on async_to_sync until the loop has
    run the group send: with the loop busy with the other engines that is milliseconds per
    event, on the order path. Bound, a thread hands the send to the loop
    (call_soon_threadsafe) and goes on; one task sends them in the order they were handed over.
    Delivery stays what the channel layer gives: at most once (a failure is logged).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent = 0
        self.task = loop.create_task(self._run(), name="qb.events.sender")

    def offer(self, envelope: dict) -> bool:
        """Hand over a send from another thread; False if this loop cannot take it."""
        if threading.get_ident() == self.thread or self.loop.is_closed():
            return False
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, envelope)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    async def _run(self) -> None:
        layer = get_channel_layer()
        while True:
            envelope = await self.queue.get()
            try:
                await layer.group_send(
                    group_name(envelope["event_type"]), _channel_message(envelope)
                )
                self.sent += 1
            except ChannelFull as exc:
                _warn_full(envelope, exc)
            except Exception:
                logger.exception(
                    "Could not send %s event from %s to its group.",
                    envelope["event_type"],
                    envelope["source"],
                )
            finally:
                self.queue.task_done()

    async def close(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


_sender: _Sender | None = None


async def bind_loop() -> None:
    """Send the group messages of sync publish() calls made on other threads through this
    (running) loop, without blocking them. The engines runtime binds its loop at start."""
    global _sender
    if get_channel_layer() is None:
        return
    if _sender is not None and _sender.loop is asyncio.get_running_loop():
        return
    _sender = _Sender(asyncio.get_running_loop())


async def unbind_loop(timeout: float = 5) -> None:
    """Send what is queued (waiting `timeout` seconds at most), then publish() blocks again."""
    global _sender
    sender, _sender = _sender, None
    if sender is not None:
        await sender.close(timeout)


def _send(envelope: dict, text: str) -> None:
    name = envelope["event_type"]
    # Pub/Sub first: whatever happens to the group send, the mirror is already out.
    _redis().publish(pubsub_channel(name), text)
    layer = get_channel_layer()
    if layer is None:
        return
    sender = _sender
    if sender is not None and sender.offer(envelope):
        return
    try:
        async_to_sync(layer.group_send)(group_name(name), _channel_message(envelope))
    except ChannelFull as exc:
        _warn_full(envelope, exc)


def _send_after_commit(envelope: dict, text: str) -> None:
    # The rows are committed: raising now would tell the caller its write failed when it did
    # not. A lost notification is logged instead; engines rebuild from the database anyway.
    try:
        _send(envelope, text)
    except Exception:
        logger.exception(
            "Could not publish %s event from %s after commit.",
            envelope["event_type"],
            envelope["source"],
        )


def publish(
    event_type,
    data,
    *,
    source: str,
    correlation_id=None,
    using=DEFAULT_DB_ALIAS,
    committed: bool = False,
) -> dict:
    """Publish an event now, or when the current transaction on `using` commits.

    Returns the envelope. Raises UnknownEventType / EventPayloadError at once for a bad event;
    outside a transaction a Redis failure raises too, after commit it is logged. `committed`:
    the caller's write is already committed (one statement in autocommit), so outside a
    transaction a Redis failure is logged as after a commit.
    """
    envelope = build_envelope(event_type, data, source=source, correlation_id=correlation_id)
    text = _encode(envelope)  # fails now, in the caller, if it cannot be JSON
    if transaction.get_connection(using).in_atomic_block:
        transaction.on_commit(functools.partial(_send_after_commit, envelope, text), using=using)
    elif committed:
        _send_after_commit(envelope, text)
    else:
        _send(envelope, text)
    return envelope


async def apublish(event_type, data, *, source: str, correlation_id=None) -> dict:
    """publish() for async code: sends at once (async code holds no transaction)."""
    envelope = build_envelope(event_type, data, source=source, correlation_id=correlation_id)
    text = _encode(envelope)
    name = envelope["event_type"]
    await _aredis().publish(pubsub_channel(name), text)
    layer = get_channel_layer()
    if layer is not None:
        try:
            await layer.group_send(group_name(name), _channel_message(envelope))
        except ChannelFull as exc:
            _warn_full(envelope, exc)
    return envelope


async def apublish_many(events, *, source: str) -> list[dict]:
    """Many events in one Redis round trip (a pipeline of PUBLISHes), then their group sends.

    `events`: (event_type, data) or (event_type, data, correlation_id) items. Every envelope is
    built and checked like apublish()'s before anything is sent, so one bad event refuses the
    whole call (nothing sent). The Pub/Sub mirrors go first, in order; then each envelope goes
    to its Channels group (ChannelFull warned, as in apublish). For high-rate publishers (the
    collector) that would otherwise pay one round trip per event. Returns the envelopes.
    """
    envelopes = []
    texts = []
    for item in events:
        event_type, data, *rest = item
        correlation_id = rest[0] if rest else None
        envelope = build_envelope(event_type, data, source=source, correlation_id=correlation_id)
        texts.append(_encode(envelope))
        envelopes.append(envelope)
    if not envelopes:
        return envelopes
    pipe = _aredis().pipeline(transaction=False)
    for envelope, text in zip(envelopes, texts, strict=True):
        pipe.publish(pubsub_channel(envelope["event_type"]), text)
    await pipe.execute()
    layer = get_channel_layer()
    if layer is not None:
        for envelope in envelopes:
            try:
                await layer.group_send(
                    group_name(envelope["event_type"]), _channel_message(envelope)
                )
            except ChannelFull as exc:
                _warn_full(envelope, exc)
    return envelopes
