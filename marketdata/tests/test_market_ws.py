"""`/ws/market/<symbol>/` over the real Redis channel layer (WebsocketCommunicator)."""

import datetime as dt
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from marketdata.keys import candles_key, market_stream_group, quote_key
from marketdata.selectors import known_symbols_clear
from marketdata.types import Candle
from qbsite.asgi import application
from qbsite.tests.api_factories import make_candle, make_stock

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost")
WAIT = 10  # seconds before a missing message fails the test (never a timing assertion)


@pytest.fixture(autouse=True)
def fresh_symbols(redis_client):
    known_symbols_clear()
    yield
    known_symbols_clear()


@pytest.fixture
def samsung(transactional_db):
    return make_stock("005930", "Samsung Electronics", "KOSPI")


async def _connect(path, user=None):
    headers = [ORIGIN]
    if user is not None:
        token, _ = await Token.objects.aget_or_create(user=user)
        headers.append((b"authorization", f"Token {token.key}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=WAIT)
    return communicator, connected, code


async def test_snapshot_then_group_updates_are_forwarded(client_user, samsung, redis_client):
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    redis_client.hset(
        quote_key("005930"),
        mapping={"timestamp": "2024-05-02T00:05:07Z", "close": "70200", "volume": "10"},
    )
    for i in range(3):  # archived, older than what Redis holds
        await _acandle(now - dt.timedelta(minutes=5 - i))
    building = Candle("005930", "1m", now + dt.timedelta(minutes=1), *[Decimal(70300)] * 4, 5)
    closed = Candle("005930", "1m", now, *[Decimal(70200)] * 4, 7)
    redis_client.rpush(candles_key("005930", "1m"), building.to_json(), closed.to_json())

    communicator, connected, _ = await _connect("/ws/market/005930/", client_user)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=WAIT)
    assert snapshot["type"] == "snapshot"
    assert snapshot["quote"]["close"] == "70200.00"
    assert snapshot["quote"]["prev_close"] is None
    times = [dt.datetime.fromisoformat(c["time"]) for c in snapshot["candles"]]
    # The building candle is not in it; the closed ones are, newest first, from both stores.
    assert times == [now - dt.timedelta(minutes=m) for m in (0, 3, 4, 5)]
    assert all(c["closed"] for c in snapshot["candles"])

    layer = get_channel_layer()
    update = {"symbol": "005930", "close": 70300}
    await layer.group_send(
        market_stream_group("005930"), {"type": "market.update", "kind": "quote", "data": update}
    )
    assert await communicator.receive_json_from(timeout=WAIT) == {
        "type": "update",
        "kind": "quote",
        "data": update,
    }
    await communicator.disconnect()


async def _acandle(time):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_candle)(time=time, close="70000")


async def test_an_unknown_symbol_is_closed_with_4404(client_user, samsung):
    communicator, connected, _ = await _connect("/ws/market/999999/", client_user)
    assert connected  # accepted as an authenticated user, then told the symbol is unknown
    closing = await communicator.receive_output(timeout=WAIT)
    assert closing == {"type": "websocket.close", "code": 4404}


async def test_anonymous_4401_and_stranger_4403(stranger, samsung):
    _, connected, code = await _connect("/ws/market/005930/")
    assert (connected, code) == (False, 4401)
    _, connected, code = await _connect("/ws/market/005930/", stranger)
    assert (connected, code) == (False, 4403)


async def test_no_updates_after_disconnect(trader, samsung):
    communicator, connected, _ = await _connect("/ws/market/005930/", trader)
    assert connected
    snapshot = await communicator.receive_json_from(timeout=WAIT)
    assert snapshot["quote"] is None and snapshot["candles"] == []
    layer = get_channel_layer()
    group_key = layer._group_key(market_stream_group("005930"))
    connection = layer.connection(layer.consistent_hash(market_stream_group("005930")))
    assert await connection.zcard(group_key) == 1
    await communicator.disconnect()
    assert await connection.zcard(group_key) == 0
