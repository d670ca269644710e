"""The event bus on the real Redis channel layer and real Redis Pub/Sub.

Pub/Sub channels are shared by every Redis database number (other test runs may publish on
them), so each test picks out its own events by a unique correlation_id.
"""

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import transaction

from qbsite import events
from qbsite.events import EventPayloadError, EventType, UnknownEventType
from qbsite.exceptions import QBError

WAIT = 10  # seconds before a missing message fails the test (never a timing assertion)


class PerMemberSendLayer(RedisChannelLayer):
    """channels_redis, delivering a group message with send() to each member: send() raises
    ChannelFull on a full channel where channels_redis' group_send skips it silently."""

    async def group_send(self, group, message):
        connection = self.connection(self.consistent_hash(group))
        for member in await connection.zrange(self._group_key(group), 0, -1):
            await self.send(member.decode(), message)


@pytest.fixture
def subscriber(settings, redis_client):
    """subscribe(event_type) -> a Pub/Sub connection already subscribed (confirmed)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsubs = []

    def subscribe(event_type):
        pubsub = client.pubsub()
        pubsub.subscribe(events.pubsub_channel(event_type))
        confirmation = pubsub.get_message(timeout=WAIT)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"
        pubsubs.append(pubsub)
        return pubsub

    yield subscribe
    for pubsub in pubsubs:
        pubsub.close()
    client.close()


def pubsub_envelopes(pubsub, correlation_ids, count):
    """The next `count` Pub/Sub envelopes whose correlation_id is one of ours, in order."""
    found = []
    deadline = time.monotonic() + WAIT
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {found} of {count} events arrived"
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message and message["type"] == "message":
            envelope = json.loads(message["data"])
            if envelope["correlation_id"] in correlation_ids:
                found.append(envelope)
    return found


async def _areceive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), WAIT)


def group_member(event_type):
    """A channel added to the event type's group (a plain name: usable across event loops)."""
    layer = get_channel_layer()
    channel = f"test-events-{uuid.uuid4().hex}"
    async_to_sync(layer.group_add)(events.group_name(event_type), channel)
    return layer, channel


def receive(layer, channel):
    return async_to_sync(_areceive)(layer, channel)


def cid():
    return f"test-{uuid.uuid4()}"


# --- Envelope on both channels ----------------------------------------------------------------
def test_publish_reaches_the_group_and_the_pubsub_mirror(subscriber):
    pubsub = subscriber(EventType.CANDLE_CLOSED)
    layer, channel = group_member(EventType.CANDLE_CLOSED)
    correlation_id = cid()
    when = dt.datetime(2026, 1, 5, 0, 1, tzinfo=dt.UTC)

    returned = events.publish(
        "candle_closed",
        {"symbol": "005930", "close": Decimal("71500"), "time": when, "volume": 120, "ok": True},
        source="collector",
        correlation_id=correlation_id,
    )

    message = receive(layer, channel)
    assert message["type"] == "event.message"
    envelope = message["event"]
    assert set(envelope) == {"event_type", "source", "timestamp", "data", "correlation_id"}
    assert envelope["event_type"] == "candle_closed"
    assert envelope["source"] == "collector"
    assert envelope["correlation_id"] == correlation_id
    assert envelope["data"] == {
        "symbol": "005930",
        "close": "71500",
        "time": "2026-01-05T00:01:00+00:00",
        "volume": 120,
        "ok": True,
    }
    stamp = dt.datetime.fromisoformat(envelope["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)

    (mirrored,) = pubsub_envelopes(pubsub, {correlation_id}, 1)
    assert mirrored == envelope == returned


async def test_apublish_reaches_both_and_carries_the_correlation_id(subscriber):
    pubsub = subscriber(EventType.ORDER_PLACED)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("events.order_placed", channel)
    correlation_id = uuid.uuid4()

    await events.apublish(
        EventType.ORDER_PLACED,
        {"client_order_id": "abc", "price": Decimal("92900"), "side": "BUY"},
        source="orders",
        correlation_id=correlation_id,
    )

    message = await _areceive(layer, channel)
    assert message["event"]["correlation_id"] == str(correlation_id)
    assert message["event"]["data"]["price"] == "92900"
    (mirrored,) = await asyncio.to_thread(pubsub_envelopes, pubsub, {str(correlation_id)}, 1)
    assert mirrored == message["event"]


async def test_apublish_many_sends_every_envelope_to_both_in_order(subscriber):
    candles = subscriber(EventType.CANDLE_CLOSED)
    quotes = subscriber(EventType.MARKET_DATA_RECEIVED)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("events.candle_closed", channel)
    await layer.group_add("events.market_data_received", channel)
    ids = [cid() for _ in range(3)]

    sent = await events.apublish_many(
        [
            ("candle_closed", {"n": 0, "price": Decimal("70000")}, ids[0]),
            (EventType.MARKET_DATA_RECEIVED, {"n": 1}, ids[1]),
            ("candle_closed", {"n": 2}, ids[2]),
        ],
        source="collector",
    )

    assert [e["correlation_id"] for e in sent] == ids
    assert [e["source"] for e in sent] == ["collector"] * 3
    received = [(await _areceive(layer, channel))["event"] for _ in range(3)]
    assert received == sent
    assert received[0]["data"] == {"n": 0, "price": "70000"}
    mirrored = await asyncio.to_thread(pubsub_envelopes, candles, {ids[0], ids[2]}, 2)
    assert mirrored == [sent[0], sent[2]]
    (quote,) = await asyncio.to_thread(pubsub_envelopes, quotes, {ids[1]}, 1)
    assert quote == sent[1]


async def test_apublish_many_refuses_a_bad_event_before_sending_any(subscriber):
    pubsub = subscriber(EventType.HEARTBEAT)
    good = cid()
    with pytest.raises(UnknownEventType, match="no_such_event"):
        await events.apublish_many(
            [("heartbeat", {}, good), ("no_such_event", {})], source="collector"
        )
    with pytest.raises(EventPayloadError, match=r"data\.x"):
        await events.apublish_many(
            [("heartbeat", {}, good), ("heartbeat", {"x": object()})], source="collector"
        )
    later = cid()
    await events.apublish_many([("heartbeat", {}, later)], source="collector")
    # The first envelope on the channel with one of our ids is the later one: none went before.
    (first,) = await asyncio.to_thread(pubsub_envelopes, pubsub, {good, later}, 1)
    assert first["correlation_id"] == later
    assert await events.apublish_many([], source="collector") == []


def test_without_correlation_id_it_is_null(subscriber):
    pubsub = subscriber(EventType.HEARTBEAT)
    marker = cid()
    events.publish("heartbeat", {"engine": marker}, source="monitor")
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message and json.loads(message["data"])["data"].get("engine") == marker:
            assert json.loads(message["data"])["correlation_id"] is None
            break


# --- Sent on commit, not on rollback ----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_it_is_sent_after_commit(subscriber, redis_client):
    pubsub = subscriber(EventType.ORDER_EXECUTED)
    layer, channel = group_member(EventType.ORDER_EXECUTED)
    event_id, marker_id = cid(), cid()

    with transaction.atomic():
        events.publish("order_executed", {"n": 1}, source="orders", correlation_id=event_id)
        # A marker sent straight to both channels while the transaction is still open: if the
        # event had gone out already, it would arrive before the marker.
        marker = {"event_type": "order_executed", "correlation_id": marker_id}
        redis_client.publish("events:order_executed", json.dumps(marker))
        async_to_sync(layer.group_send)(
            "events.order_executed", {"type": "event.message", "event": marker}
        )

    first, second = pubsub_envelopes(pubsub, {event_id, marker_id}, 2)
    assert [first["correlation_id"], second["correlation_id"]] == [marker_id, event_id]
    assert receive(layer, channel)["event"]["correlation_id"] == marker_id
    assert receive(layer, channel)["event"]["correlation_id"] == event_id


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_sends_nothing(subscriber):
    pubsub = subscriber(EventType.POSITION_UPDATED)
    layer, channel = group_member(EventType.POSITION_UPDATED)
    lost_id, inner_id, kept_id = cid(), cid(), cid()

    with pytest.raises(RuntimeError), transaction.atomic():
        events.publish("position_updated", {}, source="portfolio", correlation_id=lost_id)
        raise RuntimeError("roll back")
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back
            events.publish("position_updated", {}, source="portfolio", correlation_id=inner_id)
            raise RuntimeError("roll back the savepoint")
        events.publish("position_updated", {}, source="portfolio", correlation_id=kept_id)

    # The first of our events to arrive on either channel is the committed one.
    (first,) = pubsub_envelopes(pubsub, {lost_id, inner_id, kept_id}, 1)
    assert first["correlation_id"] == kept_id
    assert receive(layer, channel)["event"]["correlation_id"] == kept_id


# --- Errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("event_type", ["order_cancelled", "events.heartbeat", "", None])
def test_unknown_event_type_is_an_error_naming_it(event_type):
    with pytest.raises(UnknownEventType, match=f"Unknown event type {event_type!r}"):
        events.publish(event_type, {}, source="test")
    assert issubclass(UnknownEventType, QBError)


class Opaque:
    pass


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"order": {"fills": [1, {"at": Opaque()}]}}, r"data\.order\.fills\[1\]\.at is a Opaque"),
        ({"price": float("nan")}, r"data\.price is nan"),
        ({"price": Decimal("NaN")}, r"data\.price is Decimal\(NaN\)"),
        ({"when": dt.datetime(2026, 1, 5, 9)}, r"data\.when is a naive datetime"),
        ({"ids": {1, 2}}, r"data\.ids is a set"),
        ({"by_id": {7: "x"}}, r"data\.by_id has a key 7"),
        (["not", "a", "dict"], r"must be a dict, got list"),
    ],
)
def test_payload_that_does_not_serialize_is_an_error_naming_the_key(data, where):
    with pytest.raises(EventPayloadError, match=where):
        events.publish("trading_signal", data, source="strategy")


@pytest.mark.django_db(transaction=True)
def test_bad_payload_raises_at_the_call_even_inside_a_transaction():
    with pytest.raises(EventPayloadError, match=r"data\.x"), transaction.atomic():
        events.publish("risk_alert", {"x": Opaque()}, source="risk")


def test_source_and_correlation_id_are_checked():
    with pytest.raises(QBError, match="source"):
        events.publish("heartbeat", {}, source="")
    with pytest.raises(QBError, match="correlation_id"):
        events.publish("heartbeat", {}, source="monitor", correlation_id=42)


# --- Full channels ---------------------------------------------------------------------------
def _layers_with(settings, **config):
    layers = {"default": {**settings.CHANNEL_LAYERS["default"]}}
    layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], **config}
    return layers


def test_full_member_channel_channels_redis_skips_it_and_the_mirror_still_goes(
    settings, subscriber
):
    settings.CHANNEL_LAYERS = _layers_with(settings, capacity=1)
    pubsub = subscriber(EventType.INDICATORS_UPDATED)
    layer, channel = group_member(EventType.INDICATORS_UPDATED)
    async_to_sync(layer.send)(channel, {"type": "filler"})  # the channel is now full
    dropped_id, later_id = cid(), cid()

    events.publish("indicators_updated", {}, source="indicators", correlation_id=dropped_id)

    (mirrored,) = pubsub_envelopes(pubsub, {dropped_id}, 1)
    assert mirrored["correlation_id"] == dropped_id
    assert receive(layer, channel) == {"type": "filler"}
    # With room again, the next event arrives; the one sent while full never will.
    events.publish("indicators_updated", {}, source="indicators", correlation_id=later_id)
    assert receive(layer, channel)["event"]["correlation_id"] == later_id


def test_channel_full_raised_by_the_layer_is_logged_not_raised(settings, subscriber, caplog):
    settings.CHANNEL_LAYERS = _layers_with(settings, capacity=1)
    settings.CHANNEL_LAYERS["default"]["BACKEND"] = f"{__name__}.PerMemberSendLayer"
    pubsub = subscriber(EventType.RISK_ALERT)
    layer, channel = group_member(EventType.RISK_ALERT)
    assert isinstance(layer, PerMemberSendLayer)
    async_to_sync(layer.send)(channel, {"type": "filler"})
    correlation_id = cid()

    with caplog.at_level(logging.WARNING, logger="qb.events"):
        events.publish(
            "risk_alert", {"level": "high"}, source="risk", correlation_id=correlation_id
        )

    (mirrored,) = pubsub_envelopes(pubsub, {correlation_id}, 1)
    assert mirrored["data"] == {"level": "high"}
    warnings = [r for r in caplog.records if r.name == "qb.events"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "risk_alert" in warnings[0].getMessage()
    assert "events.risk_alert" in warnings[0].getMessage()


async def test_apublish_channel_full_is_logged_not_raised(settings, subscriber, caplog):
    settings.CHANNEL_LAYERS = _layers_with(settings, capacity=1)
    settings.CHANNEL_LAYERS["default"]["BACKEND"] = f"{__name__}.PerMemberSendLayer"
    pubsub = subscriber(EventType.TRADING_STATE_CHANGED)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("events.trading_state_changed", channel)
    await layer.send(channel, {"type": "filler"})
    correlation_id = cid()

    with caplog.at_level(logging.WARNING, logger="qb.events"):
        await events.apublish(
            "trading_state_changed", {"to": "HALTED"}, source="risk", correlation_id=correlation_id
        )

    (mirrored,) = await asyncio.to_thread(pubsub_envelopes, pubsub, {correlation_id}, 1)
    assert mirrored["data"] == {"to": "HALTED"}
    assert any(r.name == "qb.events" and r.levelno == logging.WARNING for r in caplog.records)


def test_event_names_are_the_design_list():
    assert {
        "market_data_received",
        "candle_closed",
        "indicators_updated",
        "trading_signal",
        "order_placed",
        "order_executed",
        "order_rejected",
        "position_updated",
        "risk_alert",
        "trading_state_changed",
        "heartbeat",
    } == events.EVENT_TYPES
    assert events.group_name("heartbeat") == "events.heartbeat"
    assert events.pubsub_channel(EventType.HEARTBEAT) == "events:heartbeat"


# --- Sync publishers beside a running loop (the engines' database threads) -----------------------
async def test_a_bound_loop_sends_threads_group_messages_in_order_without_blocking_them():
    import threading

    layer = get_channel_layer()
    channel = f"test-events-{uuid.uuid4().hex}"
    await layer.group_add(events.group_name(EventType.HEARTBEAT), channel)
    ids = [cid() for _ in range(20)]
    await events.bind_loop()
    try:

        def publish_all():
            for number, correlation_id in enumerate(ids):
                events.publish(
                    EventType.HEARTBEAT, {"n": number}, source="test", correlation_id=correlation_id
                )

        # The thread runs while this loop is blocked in join(): it can only finish because it
        # hands its sends over instead of waiting for the loop to make them.
        thread = threading.Thread(target=publish_all)
        thread.start()
        thread.join(timeout=WAIT)
        assert not thread.is_alive()
        assert events._sender.sent == 0
        received = [await _areceive(layer, channel) for _ in ids]
        assert events._sender.sent == len(ids)  # all through the loop's sender task
    finally:
        await events.unbind_loop()
    assert [message["event"]["correlation_id"] for message in received] == ids
    assert [message["event"]["data"]["n"] for message in received] == list(range(20))
    assert events._sender is None


async def test_unbind_sends_what_is_queued_and_publish_blocks_again():
    from asgiref.sync import sync_to_async

    layer = get_channel_layer()
    channel = f"test-events-{uuid.uuid4().hex}"
    await layer.group_add(events.group_name(EventType.HEARTBEAT), channel)
    queued, later = cid(), cid()
    await events.bind_loop()

    def publish_one(correlation_id):
        events.publish(EventType.HEARTBEAT, {}, source="test", correlation_id=correlation_id)

    await sync_to_async(publish_one, thread_sensitive=False)(queued)
    await events.unbind_loop()  # drains: the queued send is done when this returns
    first = await asyncio.wait_for(layer.receive(channel), 0.5)
    assert first["event"]["correlation_id"] == queued
    # Unbound: publish() itself delivers before it returns (async_to_sync, as before binding).
    await sync_to_async(publish_one, thread_sensitive=False)(later)
    second = await asyncio.wait_for(layer.receive(channel), 0.5)
    assert second["event"]["correlation_id"] == later
