"""Review findings on kis.ws, shown against the fake KIS server's WebSocket."""

import asyncio
import datetime as dt
import json
import logging
import random
from decimal import Decimal

from kis.frames import TR_TRADES, parse_control
from kis.testing.fake_ws import IN_USE, data_frame, trade_record, ws_hub
from kis.ws import KISWebSocket

from .test_ws import issuer, running

AT = dt.datetime(2026, 3, 3, 9, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=9)))


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


async def test_a_frame_with_non_ascii_digits_is_skipped_not_fatal(fake_kis, caplog):
    # "²".isdigit() is True but int("²") raises ValueError: that escaped the reader's
    # FrameError handling and ended the stream (and the shared session's consumers).
    caplog.set_level(logging.WARNING, logger="qb.kis")
    hub = ws_hub(fake_kis.state)
    client = KISWebSocket(
        url=fake_kis.ws_url,
        approval_key=issuer(fake_kis.state),
        backoff_base=0.01,
        backoff_max=0.05,
    )
    await client.subscribe(TR_TRADES, "005930")
    bad_volume = trade_record("005930", AT, 70000, volume=1)
    bad_volume[12] = "²"  # CNTG_VOL
    async with running(client) as queue:
        await hub.wait_for(lambda: hub.registered(TR_TRADES, "005930"))
        hub.push_raw(data_frame(TR_TRADES, [bad_volume]))
        hub.push_raw("0|H0STCNT0|²|" + "^".join(trade_record("005930", AT, 70000, volume=1)))
        hub.push_trades([trade_record("005930", AT, 70100, volume=9)])
        batch = await asyncio.wait_for(queue.get(), 5)
    assert [t.tick.price for t in batch.records] == [Decimal(70100)]
    assert client.bad_frames == 2 and client.connections == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("CNTG_VOL (volume) '²' is not a whole number" in m for m in messages)
    assert any("record count '²' is not a positive number" in m for m in messages)
