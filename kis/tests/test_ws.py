"""kis.ws: the KIS WebSocket client against the fake KIS server (real sockets)."""

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import secrets
import time
from decimal import Decimal

import pytest
import websockets

from kis.crypto import DecryptError
from kis.frames import TR_FILLS_VIRTUAL, TR_TRADES, FillNotice, FrameError
from kis.testing.fake_ws import (
    control,
    data_frame,
    notice_record,
    trade_record,
    ws_hub,
)
from kis.ws import (
    ApprovalRefused,
    KISProtocol,
    KISWebSocket,
    KISWebSocketError,
    RegistrationLimitError,
    backoff_delay,
    subscribe_message,
)

KST = dt.timezone(dt.timedelta(hours=9))
AT = dt.datetime(2026, 3, 3, 9, 0, 5, tzinfo=KST)


def issuer(state, log=None):
    """An approval key provider: each call gets a key the fake issued (as POST /oauth2/Approval)."""

    async def approval_key():
        key = secrets.token_hex(16)
        with state.lock:
            state.approval_keys[key] = time.time()
        if log is not None:
            log.append(key)
        return key

    return approval_key


@pytest.fixture
def hub(fake_kis):
    return ws_hub(fake_kis.state)


@pytest.fixture
def client(fake_kis):
    return KISWebSocket(
        url=fake_kis.ws_url,
        approval_key=issuer(fake_kis.state),
        backoff_base=0.01,
        backoff_max=0.05,
        rng=random.Random(1),
        today=lambda: dt.date(2026, 3, 3),
    )


@contextlib.asynccontextmanager
async def running(client):
    """client.batches() pumped into a queue while the block runs."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for batch in client.batches():
            await queue.put(batch)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def next_batch(queue, timeout=5.0):
    return await asyncio.wait_for(queue.get(), timeout)


async def test_subscribes_and_yields_trades(client, hub):
    await client.subscribe(TR_TRADES, "005930")
    await client.subscribe(TR_TRADES, "000660")
    async with running(client) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        hub.push_trades(
            [
                trade_record("005930", AT, 70000, volume=3, prev_close=69500),
                trade_record("000660", AT, 180000, volume=4),
                trade_record("035720", AT, 50000, volume=5),  # not subscribed: not sent
            ]
        )
        batch = await next_batch(queue)
    assert batch.tr_id == TR_TRADES
    assert [(t.tick.symbol, t.tick.price, t.tick.volume) for t in batch.records] == [
        ("005930", Decimal(70000), 3),
        ("000660", Decimal(180000), 4),
    ]
    assert batch.records[0].tick.time == dt.datetime(2026, 3, 3, 0, 0, 5, tzinfo=dt.UTC)
    assert batch.records[0].prev_close == 69500
    sent = hub.received
    assert {(r["tr_type"], r["tr_id"], r["tr_key"]) for r in sent} == {
        ("1", TR_TRADES, "005930"),
        ("1", TR_TRADES, "000660"),
    }
    assert all(r["custtype"] == "P" and r["content-type"] == "utf-8" for r in sent)
    assert client.protocol.registrations == {
        (TR_TRADES, "005930"): "active",
        (TR_TRADES, "000660"): "active",
    }


async def test_encrypted_fill_notices(client, hub):
    await client.subscribe(TR_FILLS_VIRTUAL, "qbtester")
    async with running(client) as queue:
        await hub.wait_for(lambda: hub.registered(TR_FILLS_VIRTUAL, "qbtester"))
        await hub.wait_for(lambda: TR_FILLS_VIRTUAL in client.protocol.keys)
        hub.push_notices(
            TR_FILLS_VIRTUAL,
            [
                notice_record(
                    order_no="0000000007",
                    symbol="005930",
                    side="BUY",
                    quantity=2,
                    price=70000,
                    at=AT,
                    order_quantity=5,
                ),
                notice_record(
                    order_no="0000000008",
                    symbol="005930",
                    quantity=5,
                    price=70000,
                    at=AT,
                    is_fill=False,
                ),
            ],
        )
        batch = await next_batch(queue)
    assert client.protocol.keys[TR_FILLS_VIRTUAL] == hub.keys[TR_FILLS_VIRTUAL]
    assert batch.tr_id == TR_FILLS_VIRTUAL
    fill, accepted = batch.records
    assert isinstance(fill, FillNotice)
    assert (fill.kind, fill.order_no, fill.quantity, fill.price, fill.order_quantity) == (
        "fill",
        "0000000007",
        2,
        Decimal(70000),
        5,
    )
    assert fill.time == dt.datetime(2026, 3, 3, 0, 0, 5, tzinfo=dt.UTC)
    assert accepted.kind == "accepted"


async def test_malformed_frames_are_logged_and_skipped(client, hub, caplog):
    caplog.set_level(logging.WARNING, logger="qb.kis")
    await client.subscribe(TR_TRADES, "005930")
    good = trade_record("005930", AT, 70000, volume=1)
    short = good[:40]
    async with running(client) as queue:
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        hub.push_raw("0|H0STCNT0|001|" + "^".join(short))  # truncated record
        hub.push_raw("0|H0STCNT0|002|" + "^".join(good))  # count says 2
        hub.push_raw("0|H0STASP0|001|a^b")  # a stream nobody reads
        hub.push_raw("1|H0STCNI0|001|c2VjcmV0")  # encrypted, no key from a subscribe answer
        hub.push_raw("{not json")
        bad_price = list(good)
        bad_price[2] = "7O000"
        hub.push_raw(data_frame(TR_TRADES, [bad_price]))
        hub.push_trades([trade_record("005930", AT, 70100, volume=9)])
        batch = await next_batch(queue)
        assert queue.empty()
    assert [t.tick.price for t in batch.records] == [Decimal(70100)]
    assert client.bad_frames == 6
    assert client.connections == 1  # never fatal
    messages = [r.getMessage() for r in caplog.records if r.name == "qb.kis"]
    assert any("40 fields for 1 record(s): expected 46" in m for m in messages)
    assert any("46 fields for 2 record(s)" in m for m in messages)
    assert any("unknown tr_id 'H0STASP0'" in m for m in messages)
    assert any("no subscribe answer gave its key" in m for m in messages)
    assert any("not JSON" in m for m in messages)
    assert any("STCK_PRPR (price) '7O000' is not a number" in m for m in messages)
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "qb.kis")


async def test_bad_frame_logs_are_rate_limited(fake_kis, hub, caplog):
    caplog.set_level(logging.WARNING, logger="qb.kis")
    client = KISWebSocket(
        url=fake_kis.ws_url, approval_key=issuer(fake_kis.state), log_burst=2, log_interval=60
    )
    await client.subscribe(TR_TRADES, "005930")
    async with running(client) as queue:
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        for _ in range(5):
            hub.push_raw("0|H0STCNT0|001|x")
        hub.push_trades([trade_record("005930", AT, 70000)])
        await next_batch(queue)
    assert client.bad_frames == 5
    assert len([r for r in caplog.records if "frame skipped" in r.getMessage()]) == 2


async def test_pingpong_is_answered(client, hub):
    await client.subscribe(TR_TRADES, "005930")
    async with running(client) as queue:
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        hub.ping(expect_answer_within=0.5)
        await hub.wait_for(lambda: hub.pongs == 1)
        await asyncio.sleep(0.7)  # past the deadline: the session is still there
        hub.push_trades([trade_record("005930", AT, 70000)])
        await next_batch(queue)
    assert hub.drops == 0 and hub.connections == 1
    assert client.pongs_sent == 1 and client.protocol.pings == 1


async def test_the_fake_drops_a_session_that_ignores_pingpong(fake_kis, hub):
    """The fake's check itself: a bare socket that never answers is dropped."""
    async with websockets.connect(fake_kis.ws_url, proxy=None) as ws:
        await hub.wait_for(lambda: len(hub.live) == 1)
        hub.ping(expect_answer_within=0.2)
        assert json.loads(await ws.recv())["header"]["tr_id"] == "PINGPONG"
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)
    assert hub.drops == 1


async def test_reconnects_and_subscribes_again_after_a_drop(fake_kis, hub):
    keys = []
    client = KISWebSocket(
        url=fake_kis.ws_url,
        approval_key=issuer(fake_kis.state, keys),
        backoff_base=0.01,
        backoff_max=0.05,
    )
    for symbol in ("005930", "000660"):
        await client.subscribe(TR_TRADES, symbol)
    await client.subscribe(TR_FILLS_VIRTUAL, "qbtester")
    async with running(client) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 3)
        assert hub.drop() == 1
        await hub.wait_for(lambda: hub.connections == 2 and len(hub.registrations()) == 3)
        await hub.wait_for(lambda: TR_FILLS_VIRTUAL in client.protocol.keys)
        hub.push_trades([trade_record("000660", AT, 180000, volume=2)])
        trades = await next_batch(queue)
        hub.push_notices(
            TR_FILLS_VIRTUAL,
            [notice_record(order_no="1", symbol="005930", quantity=1, price=70000, at=AT)],
        )
        notices = await next_batch(queue)
    assert trades.records[0].tick.symbol == "000660"
    assert notices.records[0].order_no == "1"
    assert client.connections == 2 and client.drops == 1
    second = [(r["tr_id"], r["tr_key"]) for r in hub.received if r["session"] == 2]
    assert sorted(second) == sorted(
        [(TR_TRADES, "005930"), (TR_TRADES, "000660"), (TR_FILLS_VIRTUAL, "qbtester")]
    )
    assert len(keys) == 2  # the provider was asked again for the new session


async def test_sessions_that_drop_soon_after_their_first_frame_keep_backing_off(fake_kis, hub):
    """No reconnect storm: a session that delivered a frame and dropped at once does not start
    the backoff over (only one that lasted STABLE_SESSION_SECONDS does)."""
    client = KISWebSocket(
        url=fake_kis.ws_url, approval_key=issuer(fake_kis.state), backoff_base=0.01,
        backoff_max=0.05,
    )  # fmt: skip
    await client.subscribe(TR_TRADES, "005930")
    async with running(client) as queue:
        for session in range(1, 4):
            await hub.wait_for(
                lambda s=session: hub.connections == s and hub.registered(TR_TRADES, "005930")
            )
            hub.push_trades([trade_record("005930", AT, 70000)])
            await next_batch(queue)
            assert hub.drop() == 1
        await hub.wait_for(lambda: hub.connections == 4)
    assert list(client.backoff_attempts) == [0, 1, 2]


async def test_keeps_trying_while_kis_is_unreachable(fake_kis, hub):
    """Connection refused: backoff, then the first session once the server is there."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = KISWebSocket(
        url=f"ws://127.0.0.1:{port}/tryitout",
        approval_key=issuer(fake_kis.state),
        backoff_base=0.01,
        backoff_max=0.02,
    )
    async with running(client):
        await asyncio.sleep(0.2)
        assert client.connections == 0
    assert client.drops == 0


async def test_41_registrations_at_most(client, hub):
    symbols = [f"{n:06d}" for n in range(1, 42)]
    for symbol in symbols:
        await client.subscribe(TR_TRADES, symbol)
    with pytest.raises(RegistrationLimitError, match="at most 41 registrations"):
        await client.subscribe(TR_TRADES, "999999")
    await client.subscribe(TR_TRADES, "000001")  # already registered: no error, no change
    async with running(client):
        await hub.wait_for(lambda: len(hub.registrations()) == 41)
    assert len(client.registrations) == 41
    assert all(r["tr_key"] != "999999" for r in hub.received)


async def test_a_registration_kis_refuses_is_dropped_and_logged(fake_kis, hub, caplog):
    caplog.set_level(logging.WARNING, logger="qb.kis")
    hub.max_registrations = 2  # the server's limit below the client's
    client = KISWebSocket(url=fake_kis.ws_url, approval_key=issuer(fake_kis.state))
    for symbol in ("000001", "000002", "000003"):
        await client.subscribe(TR_TRADES, symbol)
    async with running(client):
        await hub.wait_for(lambda: len(client.protocol.rejected) == 1)
    assert client.protocol.rejected == [(TR_TRADES, "000003", "MAX SUBSCRIBE OVER")]
    assert client.registrations == [(TR_TRADES, "000001"), (TR_TRADES, "000002")]
    assert any("MAX SUBSCRIBE OVER" in r.getMessage() for r in caplog.records)


async def test_unsubscribe(client, hub):
    await client.subscribe(TR_TRADES, "005930")
    await client.subscribe(TR_TRADES, "000660")
    async with running(client) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        await client.unsubscribe(TR_TRADES, "005930")
        await hub.wait_for(lambda: hub.registrations() == {(TR_TRADES, "000660")})
        hub.push_trades([trade_record("005930", AT, 70000), trade_record("000660", AT, 180000)])
        batch = await next_batch(queue)
        with pytest.raises(KISWebSocketError, match="not subscribed"):
            await client.unsubscribe(TR_TRADES, "005930")
    assert [t.tick.symbol for t in batch.records] == ["000660"]
    assert ("2", TR_TRADES, "005930") in {
        (r["tr_type"], r["tr_id"], r["tr_key"]) for r in hub.received
    }


async def test_a_refused_approval_key_is_replaced(fake_kis, hub, caplog):
    refused = []
    good = issuer(fake_kis.state)
    calls = []

    async def approval_key():
        calls.append(1)
        return "never-issued" if len(calls) == 1 else await good()

    async def approval_key_refused(key):
        refused.append(key)

    client = KISWebSocket(
        url=fake_kis.ws_url,
        approval_key=approval_key,
        approval_key_refused=approval_key_refused,
        backoff_base=0.01,
    )
    await client.subscribe(TR_TRADES, "005930")
    async with running(client):
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
    assert refused == ["never-issued"]
    assert client.connections == 2
    assert any("refused the WebSocket approval key" in r.getMessage() for r in caplog.records)
    assert all("never-issued" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("tr_id", "tr_key", "error"),
    [("H0STASP0", "005930", "reads H0STCNT0"), (TR_TRADES, " ", "tr_key is empty")],
)
async def test_bad_subscriptions(client, tr_id, tr_key, error):
    with pytest.raises(KISWebSocketError, match=error):
        await client.subscribe(tr_id, tr_key)


def test_bad_url():
    async def key():
        return "k"

    with pytest.raises(KISWebSocketError, match="not ws:// or wss://"):
        KISWebSocket(url="http://example", approval_key=key)


# --- the protocol without sockets ------------------------------------------------------------
def test_protocol_pingpong_keys_and_sessions():
    protocol = KISProtocol(today=lambda: dt.date(2026, 3, 3))
    protocol.add(TR_FILLS_VIRTUAL, "qbtester")
    ping = '{"header":{"tr_id":"PINGPONG","datetime":"20260303090000"}}'
    assert protocol.handle(ping) == (None, [ping])
    key, iv = "k" * 32, "i" * 16
    protocol.handle(
        control(TR_FILLS_VIRTUAL, "qbtester", ("OPSP0000", "SUBSCRIBE SUCCESS"), key=key, iv=iv)
    )
    assert protocol.registrations[(TR_FILLS_VIRTUAL, "qbtester")] == "active"
    record = notice_record(order_no="5", symbol="005930", quantity=1, price=100, at=AT)
    batch, replies = protocol.handle(data_frame(TR_FILLS_VIRTUAL, [record], key=key, iv=iv))
    assert batch.records[0].order_no == "5" and replies == []
    # A new session: the old keys are void until its subscribe answers come.
    assert protocol.session_started() == [(TR_FILLS_VIRTUAL, "qbtester")]
    assert protocol.registrations[(TR_FILLS_VIRTUAL, "qbtester")] == "pending"
    with pytest.raises(DecryptError, match="no subscribe answer gave its key"):
        protocol.handle(data_frame(TR_FILLS_VIRTUAL, [record], key=key, iv=iv))
    # A frame encrypted with another key: bad padding or garbage, never a crash.
    protocol.handle(
        control(
            TR_FILLS_VIRTUAL, "qbtester", ("OPSP0000", "SUBSCRIBE SUCCESS"), key="x" * 32, iv=iv
        )
    )
    with pytest.raises((DecryptError, FrameError)):
        protocol.handle(data_frame(TR_FILLS_VIRTUAL, [record], key=key, iv=iv))


def test_protocol_already_subscribed_is_active_and_approval_refusal_raises():
    protocol = KISProtocol()
    protocol.add(TR_TRADES, "005930")
    protocol.handle(control(TR_TRADES, "005930", ("OPSP0002", "ALREADY IN SUBSCRIBE"), rt_cd="1"))
    assert protocol.registrations[(TR_TRADES, "005930")] == "active"
    with pytest.raises(ApprovalRefused, match="invalid approval"):
        protocol.handle(
            control(TR_TRADES, "005930", ("OPSP0011", "invalid approval : NOT FOUND"), rt_cd="9")
        )


def test_subscribe_message_shape():
    assert json.loads(subscribe_message("KEY", TR_TRADES, "005930", subscribe=False)) == {
        "header": {"approval_key": "KEY", "custtype": "P", "tr_type": "2", "content-type": "utf-8"},
        "body": {"input": {"tr_id": TR_TRADES, "tr_key": "005930"}},
    }


def test_backoff_grows_with_jitter_up_to_the_cap():
    rng = random.Random(7)
    delays = [backoff_delay(n, base=0.5, cap=30, rng=rng) for n in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(30, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[9] >= 15 and backoff_delay(1000, base=0.5, cap=30) <= 30
    assert len({round(backoff_delay(3, rng=rng), 6) for _ in range(20)}) > 1  # jittered
