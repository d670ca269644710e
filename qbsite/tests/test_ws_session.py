import pytest
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from qbsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(path, headers=()):
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_anonymous_is_closed_with_4401():
    _, connected, code = await _connect("/ws/session/", [(b"origin", b"http://localhost")])
    assert not connected
    assert code == 4401


async def test_token_user_gets_hello_and_pong(trader):
    token = await Token.objects.acreate(user=trader)
    communicator, connected, _ = await _connect(
        "/ws/session/",
        [(b"origin", b"http://localhost"), (b"authorization", f"Token {token.key}".encode())],
    )
    assert connected
    assert await communicator.receive_json_from() == {
        "type": "hello",
        "user": "tom-trader",
        "role": "trader",
    }
    await communicator.send_json_to({"type": "ping", "id": 7})
    assert await communicator.receive_json_from() == {"type": "pong", "id": 7}
    await communicator.send_to(text_data="not json")
    reply = await communicator.receive_json_from()
    assert reply["type"] == "error"
    await communicator.disconnect()


async def test_stranger_is_closed_with_4403(stranger):
    token = await Token.objects.acreate(user=stranger)
    _, connected, code = await _connect(
        f"/ws/session/?token={token.key}", [(b"origin", b"http://localhost")]
    )
    assert not connected
    assert code == 4403


async def test_bad_token_is_anonymous():
    _, connected, code = await _connect(
        "/ws/session/?token=nope", [(b"origin", b"http://localhost")]
    )
    assert code == 4401
    assert not connected
