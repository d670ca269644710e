"""The engines runtime (qbsite/engines.py) over the real Redis channel layer and Pub/Sub.

Tiny engines defined here subscribe to an event type and count what they get. Pub/Sub
channels are shared by every Redis database number, so heartbeats are picked out by engine name.
"""

import asyncio
import contextlib
import json
import logging

import pytest
import redis.asyncio

from marketdata.engines import ENGINES as MARKETDATA_ENGINES
from marketdata.keys import heartbeat_key
from qbsite import events
from qbsite.engine_base import Engine
from qbsite.engines import EngineError, Runtime, load_engine_class, registry

WAIT = 10  # seconds before something missing fails the test (never a timing assertion)


class CountingEngine(Engine):
    name = "rt-counter"
    subscribes = (events.EventType.CANDLE_CLOSED,)

    def __init__(self):
        super().__init__()
        self.seen = []
        self.setup_calls = 0
        self.stopped = False

    async def setup(self):
        self.setup_calls += 1

    async def handle(self, envelope):
        if envelope["data"].get("explode"):
            raise RuntimeError("boom in handle")
        self.seen.append(envelope["data"]["n"])

    def stats(self):
        return {"seen": len(self.seen)}

    async def stop(self):
        self.stopped = True


class FlakyLoopEngine(Engine):
    name = "rt-flaky-loop"
    has_loop = True

    def __init__(self):
        super().__init__()
        self.starts = 0

    async def loop(self):
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("boom in loop")
        await self.stopping.wait()


async def _until(predicate, what):
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.02)
    return True


@contextlib.asynccontextmanager
async def running(*engines, **options):
    options.setdefault("heartbeat_seconds", 0.2)
    options.setdefault("backoff_initial", 0.05)
    options.setdefault("backoff_max", 0.2)
    runtime = Runtime(engines, **options)
    task = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        yield runtime
    finally:
        runtime.request_stop()
        async with asyncio.timeout(WAIT):
            await task


@pytest.fixture
async def aredis(settings, redis_client):
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()


async def _heartbeat_seen(client, engine):
    return await client.exists(heartbeat_key(engine)) == 1


async def test_events_reach_handle_and_heartbeats_are_published(aredis):
    pubsub = aredis.pubsub()
    await pubsub.subscribe(events.pubsub_channel("heartbeat"))
    engine = CountingEngine()
    async with running(engine):
        # The heartbeat also joins the groups: publish only once it has been seen.
        beat = None
        async with asyncio.timeout(WAIT):
            while beat is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message and json.loads(message["data"])["data"]["engine"] == engine.name:
                    beat = json.loads(message["data"])
        assert beat["event_type"] == "heartbeat"
        assert beat["source"] == engine.name
        assert set(beat["data"]) == {"engine", "pid", "host", "started_at", "ready", "stats"}

        for n in range(5):
            await events.apublish("candle_closed", {"n": n}, source="test")
        await _until(lambda: len(engine.seen) == 5, "five events")
        assert engine.seen == [0, 1, 2, 3, 4]
        assert engine.setup_calls == 1

        async with asyncio.timeout(WAIT):
            while True:
                stored = await aredis.hgetall(heartbeat_key(engine.name))
                if stored and json.loads(stored[b"stats"]) == {"seen": 5}:
                    break
                await asyncio.sleep(0.05)
        assert stored[b"engine"] == engine.name.encode()
        assert stored[b"ready"] == b"1"
        ttl = await aredis.pttl(heartbeat_key(engine.name))
        assert 0 < ttl <= 1000  # three periods of 0.2 s, at least 1 s
    await pubsub.aclose()
    assert engine.stopped


async def test_an_exception_in_handle_is_logged_and_the_engine_goes_on(aredis, caplog):
    engine = CountingEngine()
    caplog.set_level(logging.ERROR, logger="qb.engine.rt-counter")
    async with running(engine):
        async with asyncio.timeout(WAIT):
            while not await _heartbeat_seen(aredis, engine.name):
                await asyncio.sleep(0.02)
        await events.apublish("candle_closed", {"explode": True}, source="test")
        await events.apublish("candle_closed", {"n": 1}, source="test")
        await _until(lambda: engine.seen == [1], "the event after the failing one")
    failures = [r for r in caplog.records if r.name == "qb.engine.rt-counter"]
    assert len(failures) == 1
    assert "handle() raised on a candle_closed event from test" in failures[0].getMessage()
    assert failures[0].exc_info[1].args == ("boom in handle",)


async def test_loop_is_restarted_after_raising(caplog):
    engine = FlakyLoopEngine()
    caplog.set_level(logging.ERROR, logger="qb.engine.rt-flaky-loop")
    async with running(engine):
        await _until(lambda: engine.starts == 2, "loop() started again")
    assert engine.starts == 2  # and the stop let the second run return
    messages = [r.getMessage() for r in caplog.records if r.name == "qb.engine.rt-flaky-loop"]
    assert len(messages) == 1
    assert messages[0].startswith("loop() raised; restarting it in")


def test_registry_gathers_each_apps_engines_and_settings(settings):
    settings.QB_EXTRA_ENGINES = {"rt-counter": f"{__name__}.CountingEngine"}
    found = registry()
    for name, path in MARKETDATA_ENGINES.items():
        assert found[name] == path
    assert load_engine_class("rt-counter", known=found) is CountingEngine
    assert load_engine_class(f"{__name__}.FlakyLoopEngine") is FlakyLoopEngine


def test_unknown_or_missing_engines_are_clear_errors(settings):
    settings.QB_EXTRA_ENGINES = {"ghost": "marketdata.engines.no_such_module"}
    with pytest.raises(EngineError, match=r"Unknown engine 'nope'\. Registered engines: .*ghost"):
        load_engine_class("nope")
    with pytest.raises(EngineError, match=r"module marketdata.engines.no_such_module does not"):
        load_engine_class("ghost")
    with pytest.raises(EngineError, match="is not an Engine subclass"):
        load_engine_class("qbsite.engines.Runtime")
    settings.QB_EXTRA_ENGINES = {"collector": "somewhere.else.Collector"}
    with pytest.raises(EngineError, match="registered twice"):
        registry()


def test_an_engine_subscribing_to_an_unknown_event_type_is_refused():
    class Deaf(Engine):
        name = "rt-deaf"
        subscribes = ("no_such_event",)

    with pytest.raises(events.UnknownEventType, match="no_such_event"):
        Runtime([Deaf()])
