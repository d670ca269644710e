"""kis.ws's shared session (KISSession / KISSessionConsumer) against the fake KIS server, with
real sockets: one connection per process for the KIS feed and the fill-notice listener, each
getting its own frames, reconnects, the 41 registrations across consumers, slow consumers,
closing."""

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
from decimal import Decimal

import pytest

from kis.frames import TR_FILLS_REAL, TR_FILLS_VIRTUAL, TR_TRADES
from kis.testing import TEST_APP_KEY, TEST_HTS_ID
from kis.testing.fake_ws import notice_record, trade_record, ws_hub
from kis.ws import (
    KISSessionConsumer,
    KISWebSocket,
    KISWebSocketError,
    RegistrationLimitError,
    active_sessions,
)

KST = dt.timezone(dt.timedelta(hours=9))
AT = dt.datetime(2026, 3, 4, 9, 0, 5, tzinfo=KST)
QUIET = 0.3  # seconds in which "nothing more arrives" is checked


def issuer(state):
    """An approval key provider: each call gets a key the fake issued."""

    async def approval_key():
        key = secrets.token_hex(16)
        with state.lock:
            state.approval_keys[key] = time.time()
        return key

    return approval_key


def consumer(fake, name, *, approval_key=None, **kw) -> KISSessionConsumer:
    """A consumer of the process's session on `fake` (the same session as the feed's and the
    notice listener's: same URL and app key)."""

    def build():
        client = KISWebSocket(
            url=fake.ws_url,
            approval_key=approval_key or issuer(fake.state),
            backoff_base=0.01,
            backoff_max=0.05,
            today=lambda: AT.date(),
        )
        return client, []

    return KISSessionConsumer(name, url=fake.ws_url, app_key=TEST_APP_KEY, build=build, **kw)


@pytest.fixture
def hub(fake_kis):
    return ws_hub(fake_kis.state)


@pytest.fixture
def fake(kis_settings, fake_kis, redis_client):
    """The fake with settings.KIS_* aimed at it (the default consumers read them) and a clean
    Redis (their approval key is cached there)."""
    return fake_kis


@contextlib.asynccontextmanager
async def pumping(source):
    """source.batches() pumped into a queue while the block runs; closed at the end."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for batch in source.batches():
            await queue.put(batch)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        await source.close()
        await asyncio.wait_for(task, 5)


async def next_item(queue, timeout=5.0):
    return await asyncio.wait_for(queue.get(), timeout)


async def nothing_more(queue):
    await asyncio.sleep(QUIET)
    assert queue.empty(), f"unexpected: {queue.get_nowait()!r}"


def a_notice(order_no="0000000001", at=None):
    return notice_record(order_no=order_no, symbol="005930", quantity=1, price=70000, at=at or AT)


def subscribed(hub, *registrations):
    return lambda: set(registrations) <= hub.registrations()


# --- the feed and the notice listener --------------------------------------------------------


async def test_feed_and_notice_listener_share_one_connection_and_get_their_own_frames(fake, hub):
    from marketdata.feeds.kis import KISWebSocketFeed
    from trading.brokers.kis import notice_websocket

    feed = KISWebSocketFeed(["005930", "000660"], wall_clock=lambda: AT)
    notices = notice_websocket()
    assert isinstance(feed.client, KISSessionConsumer) and feed.client.session is None
    await notices.subscribe(TR_FILLS_REAL, TEST_HTS_ID)
    async with pumping(feed) as ticks, pumping(notices) as notice_batches:
        await hub.wait_for(
            subscribed(
                hub, (TR_TRADES, "005930"), (TR_TRADES, "000660"), (TR_FILLS_REAL, TEST_HTS_ID)
            )
        )
        [session] = active_sessions()
        assert feed.client.session is session and notices.session is session
        hub.push_trades([trade_record("005930", AT, 70000, volume=3, prev_close=69000)])
        hub.push_notices(TR_FILLS_REAL, [a_notice("0000000042")])
        hub.push_trades([trade_record("000660", AT, 180000, volume=2)])
        first, second = await next_item(ticks), await next_item(ticks)
        batch = await next_item(notice_batches)
        await nothing_more(ticks)
        await nothing_more(notice_batches)
        assert hub.connections == 1 and len(hub.live) == 1  # ONE WebSocket at "KIS"
    assert [(t.symbol, t.price, t.volume) for t in first + second] == [
        ("005930", Decimal(70000), 3),
        ("000660", Decimal(180000), 2),
    ]
    assert batch.tr_id == TR_FILLS_REAL
    assert [n.order_no for n in batch.records] == ["0000000042"]
    assert feed.stats()["connections"] == 1 and feed.stats()["dropped_batches"] == 0
    assert fake.state.approval_requests == 1  # one session, one approval key
    # Both closed: the session is gone, and its socket with it.
    assert active_sessions() == []
    await hub.wait_for(lambda: hub.live == [])
    assert session.closed and session.client.connected is False


async def test_a_drop_reconnects_once_and_subscribes_both_consumers_again(fake, hub):
    from marketdata.feeds.kis import KISWebSocketFeed
    from trading.brokers.kis import notice_websocket

    feed = KISWebSocketFeed(["005930"], wall_clock=lambda: AT)
    notices = notice_websocket()
    await notices.subscribe(TR_FILLS_REAL, TEST_HTS_ID)
    async with pumping(feed) as ticks, pumping(notices) as notice_batches:
        wanted = {(TR_TRADES, "005930"), (TR_FILLS_REAL, TEST_HTS_ID)}
        await hub.wait_for(lambda: hub.registrations() == wanted)
        assert hub.drop() == 1  # one session to drop
        await hub.wait_for(lambda: hub.connections == 2 and hub.registrations() == wanted)
        hub.push_trades([trade_record("005930", AT, 70100, volume=4)])
        hub.push_notices(TR_FILLS_REAL, [a_notice("0000000007")])
        assert [t.volume for t in await next_item(ticks)] == [4]
        assert [n.order_no for n in (await next_item(notice_batches)).records] == ["0000000007"]
        await asyncio.sleep(QUIET)
        assert hub.connections == 2 and len(hub.live) == 1  # reconnected once, one socket
    again = sorted(
        (r["tr_id"], r["tr_key"]) for r in hub.received if (r["session"], r["tr_type"]) == (2, "1")
    )
    assert again == sorted(wanted)
    assert (feed.client.connections, feed.client.drops) == (2, 1)
    assert (notices.connections, notices.drops) == (2, 1)  # the same session's figures


async def test_the_41_registrations_are_counted_across_the_feed_and_the_listener(fake, hub):
    from marketdata.feeds.kis import KISWebSocketFeed
    from trading.brokers.kis import notice_websocket

    symbols = [f"{n:06d}" for n in range(1, 42)]
    feed = KISWebSocketFeed(symbols, wall_clock=lambda: AT)
    notices = notice_websocket()
    async with pumping(feed):
        await hub.wait_for(lambda: len(hub.registrations()) == 41)
        with pytest.raises(RegistrationLimitError) as refused:
            await notices.subscribe(TR_FILLS_REAL, TEST_HTS_ID)
        message = str(refused.value)
        assert "orders notices cannot subscribe to H0STCNI0 qbtester" in message
        assert "at most 41 registrations per session" in message
        assert "kis feed 41 (H0STCNT0 000001, H0STCNT0 000002" in message
        assert "and 35 more" in message and "orders notices 0" in message
        assert notices.registrations == []
        await notices.close()
    assert all(r["tr_key"] != TEST_HTS_ID for r in hub.received)  # never sent to KIS
    assert active_sessions() == []


async def test_the_feed_is_refused_what_the_listener_already_holds(fake, hub):
    from marketdata.feeds.kis import KISWebSocketFeed
    from trading.brokers.kis import notice_websocket

    notices = notice_websocket()
    await notices.subscribe(TR_FILLS_REAL, TEST_HTS_ID)
    feed = KISWebSocketFeed([f"{n:06d}" for n in range(1, 42)], wall_clock=lambda: AT)
    with pytest.raises(RegistrationLimitError) as refused:
        async for _ in feed.batches():
            pass
    message = str(refused.value)
    assert "kis feed cannot subscribe to H0STCNT0 000041" in message
    assert "kis feed 40 (" in message and "orders notices 1 (H0STCNI0 qbtester)" in message
    await feed.close()  # its 40 go; the listener's stays
    await hub.wait_for(lambda: hub.registrations() == {(TR_FILLS_REAL, TEST_HTS_ID)})
    assert len(active_sessions()) == 1
    await notices.close()
    assert active_sessions() == []


# --- consumers --------------------------------------------------------------------------------


async def test_a_slow_consumer_never_stalls_the_other_and_its_oldest_batches_are_dropped(
    fake_kis, hub, caplog
):
    caplog.set_level(logging.WARNING, logger="qb.kis")
    slow = consumer(fake_kis, "slow", queue_size=2)
    quick = consumer(fake_kis, "quick")
    await slow.subscribe(TR_TRADES, "005930")
    await quick.subscribe(TR_TRADES, "000660")
    stuck = asyncio.Event()  # the slow one takes one batch, then never comes back

    async def read_slowly():
        async for _ in slow.batches():
            await stuck.wait()

    slow_task = asyncio.create_task(read_slowly())
    async with pumping(quick) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        for n in range(6):  # one frame each: both symbols' prints in it
            hub.push_trades(
                [
                    trade_record("005930", AT, 70000 + n, volume=n + 1),
                    trade_record("000660", AT, 180000 + n, volume=n + 1),
                ]
            )
            batch = await next_item(queue, timeout=2)  # each at once, whatever "slow" does
            assert [(t.tick.symbol, t.tick.volume) for t in batch.records] == [("000660", n + 1)]
        # slow: 1 taken and stuck, then a queue of 2 for 5 more: the 3 oldest of them dropped
        await hub.wait_for(lambda: slow.batches_received == 6)
        assert (slow.dropped_batches, slow.dropped_records) == (3, 3)
        assert quick.dropped_batches == 0
        stuck.set()
        await slow.close()
        await asyncio.wait_for(slow_task, 5)
    drops = [r for r in caplog.records if "too slow" in r.getMessage()]
    assert len(drops) == 1  # once per log_interval, not once per batch
    assert "slow" in drops[0].getMessage() and drops[0].levelno == logging.WARNING


async def test_the_slow_consumer_reads_the_newest_batches_it_kept(fake_kis, hub):
    slow = consumer(fake_kis, "slow", queue_size=2)
    await slow.subscribe(TR_TRADES, "005930")  # the session's reader starts with it
    await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
    for n in range(5):
        hub.push_trades([trade_record("005930", AT, 70000, volume=n + 1)])
    await hub.wait_for(lambda: slow.batches_received == 5)
    async with pumping(slow) as queue:
        kept = [await next_item(queue), await next_item(queue)]
        await nothing_more(queue)
    assert [b.records[0].tick.volume for b in kept] == [4, 5]
    assert slow.dropped_batches == 3


async def test_closing_one_consumer_keeps_the_session_for_the_other(fake_kis, hub):
    trades = consumer(fake_kis, "trades")
    fills = consumer(fake_kis, "fills")
    await trades.subscribe(TR_TRADES, "005930")
    await fills.subscribe(TR_FILLS_VIRTUAL, TEST_HTS_ID)
    async with pumping(fills) as queue:
        async with pumping(trades):
            await hub.wait_for(lambda: len(hub.registrations()) == 2)
        # trades closed: its registration is given back to KIS, the socket stays
        await hub.wait_for(lambda: hub.registrations() == {(TR_FILLS_VIRTUAL, TEST_HTS_ID)})
        assert ("2", TR_TRADES, "005930") in {
            (r["tr_type"], r["tr_id"], r["tr_key"]) for r in hub.received
        }
        assert len(active_sessions()) == 1 and not fills.session.closed
        hub.push_trades([trade_record("005930", AT, 70000)])  # nobody's now: not even sent
        hub.push_notices(TR_FILLS_VIRTUAL, [a_notice("0000000009")])
        batch = await next_item(queue)
        await nothing_more(queue)
        assert hub.connections == 1 and len(hub.live) == 1
    assert batch.records[0].order_no == "0000000009"
    assert active_sessions() == []
    await hub.wait_for(lambda: hub.live == [])
    with pytest.raises(KISWebSocketError, match="trades: this KIS WebSocket consumer is closed"):
        await trades.subscribe(TR_TRADES, "000660")


async def test_a_registration_two_consumers_hold_is_sent_once_and_kept_for_the_last(fake_kis, hub):
    a = consumer(fake_kis, "a")
    b = consumer(fake_kis, "b")
    await a.subscribe(TR_TRADES, "005930")
    await b.subscribe(TR_TRADES, "005930")
    await b.subscribe(TR_TRADES, "000660")
    async with pumping(a) as qa, pumping(b) as qb:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        assert len(a.session.client.registrations) == 2  # counted once towards the 41
        hub.push_trades([trade_record("005930", AT, 70000), trade_record("000660", AT, 1000)])
        assert [t.tick.symbol for t in (await next_item(qa)).records] == ["005930"]
        assert [t.tick.symbol for t in (await next_item(qb)).records] == ["005930", "000660"]
        await b.unsubscribe(TR_TRADES, "005930")  # a still holds it: nothing sent
        await a.unsubscribe(TR_TRADES, "005930")  # the last holder: unsubscribed at KIS
        await hub.wait_for(lambda: hub.registrations() == {(TR_TRADES, "000660")})
        unsubscribes = [r for r in hub.received if r["tr_type"] == "2"]
        assert [(r["tr_id"], r["tr_key"]) for r in unsubscribes] == [(TR_TRADES, "005930")]
        subscribes = [r for r in hub.received if r["tr_type"] == "1"]
        assert len(subscribes) == 2


async def test_a_subscription_made_while_connected_is_sent_at_once(fake_kis, hub):
    trades = consumer(fake_kis, "trades")
    fills = consumer(fake_kis, "fills")
    await trades.subscribe(TR_TRADES, "005930")
    async with pumping(trades), pumping(fills) as queue:
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        await fills.subscribe(TR_FILLS_VIRTUAL, TEST_HTS_ID)
        await hub.wait_for(lambda: hub.registered(TR_FILLS_VIRTUAL, TEST_HTS_ID))
        await hub.wait_for(lambda: TR_FILLS_VIRTUAL in fills.session.client.protocol.keys)
        hub.push_notices(TR_FILLS_VIRTUAL, [a_notice("0000000003")])
        assert (await next_item(queue)).records[0].order_no == "0000000003"
    assert hub.connections == 1


@pytest.mark.parametrize(
    ("tr_id", "tr_key", "error"),
    [("H0STASP0", "005930", "reads H0STCNT0"), (TR_TRADES, " ", "tr_key is empty")],
)
async def test_bad_subscriptions_are_named_and_hold_nothing(fake_kis, tr_id, tr_key, error):
    c = consumer(fake_kis, "c")
    with pytest.raises(KISWebSocketError, match=error):
        await c.subscribe(tr_id, tr_key)
    assert c.registrations == [] and c.session.client.registrations == []
    await c.close()
    assert active_sessions() == []


async def test_bad_uses_are_named(fake_kis):
    c = consumer(fake_kis, "feed-like")
    with pytest.raises(KISWebSocketError, match="feed-like cannot unsubscribe from H0STCNT0"):
        await c.unsubscribe(TR_TRADES, "005930")
    await c.subscribe(TR_TRADES, "005930")
    with pytest.raises(KISWebSocketError, match="feed-like cannot unsubscribe from H0STCNT0 0006"):
        await c.unsubscribe(TR_TRADES, "000660")
    reader = c.batches()
    first = asyncio.ensure_future(reader.__anext__())
    await asyncio.sleep(0.05)
    with pytest.raises(KISWebSocketError, match="already being read"):
        await c.batches().__anext__()
    await c.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(first, 5)
    assert [b async for b in c.batches()] == []  # closed: ends at once
    assert active_sessions() == []


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"name": " "}, "needs a name"),
        ({"queue_size": 0}, "queue_size 0 must be at least 1"),
        ({"url": "http://example"}, "not ws:// or wss://"),
    ],
)
def test_bad_consumers_are_named(kw, error):
    def build():
        raise AssertionError("not reached")

    options = {"name": "x", "url": "ws://127.0.0.1:1/tryitout", "app_key": "k"} | kw
    with pytest.raises(KISWebSocketError, match=error):
        KISSessionConsumer(options.pop("name"), build=build, **options)


async def test_a_second_live_event_loop_is_refused_its_own_session(fake_kis, hub):
    """KIS allows one session per app key: a consumer on another running loop of the process
    gets an error rather than a second socket."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    other = consumer(fake_kis, "other loop")
    try:
        asyncio.run_coroutine_threadsafe(other.subscribe(TR_TRADES, "005930"), loop).result(5)
        here = consumer(fake_kis, "this loop")
        with pytest.raises(KISWebSocketError, match="open on another event loop"):
            await here.subscribe(TR_TRADES, "000660")
        assert hub.connections <= 1
    finally:
        asyncio.run_coroutine_threadsafe(other.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert active_sessions() == []


def test_a_session_left_by_an_ended_loop_is_replaced(fake_kis):
    hub = ws_hub(fake_kis.state)

    async def left_open():
        c = consumer(fake_kis, "forgetful")
        await c.subscribe(TR_TRADES, "005930")
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))

    async def used_again():
        c = consumer(fake_kis, "next")
        await c.subscribe(TR_TRADES, "000660")
        async with pumping(c) as queue:
            await hub.wait_for(lambda: hub.registered(TR_TRADES, "000660"))
            hub.push_trades([trade_record("000660", AT, 1000)])
            return (await next_item(queue)).records[0].tick.symbol

    asyncio.run(left_open())  # its loop ends with the session still registered
    assert len(active_sessions()) == 1
    assert asyncio.run(used_again()) == "000660"
    assert active_sessions() == []


async def test_a_failed_reader_ends_every_consumer_with_the_error(fake_kis):
    async def broken_provider():
        raise RuntimeError("provider broke")

    a = consumer(fake_kis, "a", approval_key=broken_provider)
    b = consumer(fake_kis, "b")
    await a.subscribe(TR_TRADES, "005930")
    await b.subscribe(TR_FILLS_VIRTUAL, TEST_HTS_ID)  # joins a's session (a's build)
    for c in (a, b):
        with pytest.raises(KISWebSocketError, match="session stopped: provider broke"):
            async for _ in c.batches():
                pass
    assert active_sessions() == []
    await a.close()
    await b.close()
