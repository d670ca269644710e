"""Review findings on kis.ws, shown against the fake KIS server's WebSocket."""

import json
import logging
import random

from kis.frames import TR_TRADES, parse_control
from kis.testing.fake_ws import IN_USE, ws_hub
from kis.ws import KISWebSocket

from .test_ws import issuer, running


def in_use_answer() -> str:
    # What KIS sends when another session already uses the app key (rt_cd 9, tr_id "(null)").
    return json.dumps(
        {
            "header": {"tr_id": "(null)", "tr_key": "", "encrypt": "N"},
            "body": {"rt_cd": "9", "msg_cd": IN_USE[0], "msg1": IN_USE[1]},
        }
    )


def test_app_key_in_use_is_not_taken_for_already_subscribed():
    control = parse_control(in_use_answer())
    assert control.kind == "in_use" and not control.ok


async def test_app_key_in_use_ends_the_session_and_reconnects_with_backoff(fake_kis, caplog):
    # Another session holds the app key (ours, not yet gone at KIS after a drop, or another
    # process): this session gets nothing; it must end and try again later, not sit idle.
    caplog.set_level(logging.WARNING, logger="qb.kis")
    hub = ws_hub(fake_kis.state)
    client = KISWebSocket(
        url=fake_kis.ws_url,
        approval_key=issuer(fake_kis.state),
        backoff_base=0.01,
        backoff_max=0.05,
        rng=random.Random(1),
    )
    await client.subscribe(TR_TRADES, "005930")
    async with running(client):
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        hub.push_raw(in_use_answer())
        await hub.wait_for(lambda: hub.connections == 2 and hub.registered(TR_TRADES, "005930"))
    assert client.drops == 1
    assert any("ALREADY IN USE appkey" in r.getMessage() for r in caplog.records)
