"""The fake KIS server's WebSocket side (tests only), and the frame encoders tests use.

kis.testing.fake_server hands every WebSocket scope to `websocket_app(state, scope, receive,
send)`. It speaks the KIS protocol (KIS.md): subscribe / unsubscribe messages checked against
the approval keys the fake issued (`state.approval_keys`), answers with the AES key / iv for the
encrypted streams, at most 41 registrations per session, PINGPONG, data frames
`<0|1>|<tr_id>|<NNN>|<payload>`.

Tests steer it through the hub hung on the state (`ws_hub(state)`), from any thread:

    hub = ws_hub(fake.state)
    await hub.wait_for(lambda: hub.registered("H0STCNT0", "005930"))
    hub.push_trades([trade_record("005930", at, 70000, volume=10)])   # one multi-record frame
    hub.push_notices(TR_FILLS_VIRTUAL, [notice_record(...)])         # encrypted
    hub.push_raw("0|H0STCNT0|001|garbage")                            # anything at all
    hub.ping(expect_answer_within=1.0)   # PINGPONG; a session that does not echo it is dropped
    hub.drop()                           # every session closed abnormally (the client reconnects)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from kis import crypto
from kis.frames import (
    FIELD_COUNTS,
    FILL_FIELDS,
    KST,
    MAX_REGISTRATIONS,
    PINGPONG,
    TR_FILLS,
    TR_TRADES,
    TRADE_FIELDS,
)

# Answers as KIS words them (msg_cd values as seen in public clients, not an official list).
SUBSCRIBED = ("OPSP0000", "SUBSCRIBE SUCCESS")
UNSUBSCRIBED = ("OPSP0001", "UNSUBSCRIBE SUCCESS")
ALREADY = ("OPSP0002", "ALREADY IN SUBSCRIBE")
NOT_SUBSCRIBED = ("OPSP0003", "UNSUBSCRIBE ERROR(not found!)")
MAX_OVER = ("OPSP0008", "MAX SUBSCRIBE OVER")
IN_USE = ("OPSP8996", "ALREADY IN USE appkey")  # another session holds the app key
BAD_APPROVAL = ("OPSP0011", "invalid approval : NOT FOUND")
BAD_TR_ID = ("OPSP0007", "SUBSCRIBE ERROR : invalid tr_id")
BAD_REQUEST = ("OPSP9999", "JSON PARSING ERROR : invalid request")

_DROP = object()


# --- encoders (what KIS sends) ---------------------------------------------------------------
def trade_record(
    symbol: str,
    at: dt.datetime,
    price,
    *,
    volume: int = 1,
    day_volume: int | None = None,
    prev_close=None,
    halted: bool = False,
) -> list[str]:
    """The 46 H0STCNT0 fields of one print (KST date and time from the aware `at`)."""
    price = Decimal(price)
    prev = Decimal(prev_close) if prev_close is not None else price
    change = price - prev
    sign = "2" if change > 0 else "5" if change < 0 else "3"
    local = at.astimezone(KST)
    values = dict.fromkeys(TRADE_FIELDS, "0")
    values.update(
        MKSC_SHRN_ISCD=symbol,
        STCK_CNTG_HOUR=local.strftime("%H%M%S"),
        STCK_PRPR=str(price),
        PRDY_VRSS_SIGN=sign,
        PRDY_VRSS=str(change),  # signed, as KIS sends it
        PRDY_CTRT=f"{(change / prev * 100) if prev else 0:.2f}",
        STCK_OPRC=str(prev),
        STCK_HGPR=str(max(price, prev)),
        STCK_LWPR=str(min(price, prev)),
        ASKP1=str(price),
        BIDP1=str(price),
        CNTG_VOL=str(volume),
        ACML_VOL=str(volume if day_volume is None else day_volume),
        CCLD_DVSN="1",
        BSOP_DATE=local.strftime("%Y%m%d"),
        NEW_MKOP_CLS_CODE="20",
        TRHT_YN="Y" if halted else "N",
        HOUR_CLS_CODE="0",
        MRKT_TRTM_CLS_CODE="0",
    )
    return [values[name] for name in TRADE_FIELDS]


def notice_record(
    *,
    order_no: str,
    symbol: str,
    side: str = "BUY",
    quantity: int,
    price,
    at: dt.datetime,
    is_fill: bool = True,
    rejected: bool = False,
    amend_cancel: str = "",
    original_order_no: str = "",
    order_quantity: int | None = None,
    order_price=None,
    account: str = "5012345601",
    name: str = "",
) -> list[str]:
    """The 26 H0STCNI0 / H0STCNI9 fields of one notice."""
    values = dict.fromkeys(FILL_FIELDS, "")
    values.update(
        CUST_ID="qbtester",
        ACNT_NO=account,
        ODER_NO=order_no,
        OODER_NO=original_order_no,
        SELN_BYOV_CLS={"SELL": "01", "BUY": "02"}[side],
        RCTF_CLS={"": "0", "amend": "1", "cancel": "2"}[amend_cancel],
        ODER_KIND="00",
        ODER_COND="0",
        STCK_SHRN_ISCD=symbol,
        CNTG_QTY=str(quantity),
        CNTG_UNPR=str(price),
        STCK_CNTG_HOUR=at.astimezone(KST).strftime("%H%M%S"),
        RFUS_YN="1" if rejected else "0",
        CNTG_YN="2" if is_fill else "1",
        ACPT_YN="2" if is_fill else "1",
        BRNC_NO="06010",
        ODER_QTY=str(order_quantity if order_quantity is not None else quantity),
        ACNT_NAME="QB",
        ORD_EXG_GB="1",
        POPUP_YN="Y",
        CNTG_ISNM40=name,
        ODER_PRC=str(order_price if order_price is not None else price),
    )
    return [values[name] for name in FILL_FIELDS]


def data_frame(tr_id: str, records: list[list[str]], *, key: str = "", iv: str = "") -> str:
    """`<0|1>|tr_id|NNN|payload`; encrypted when a key and iv are given."""
    payload = "^".join(value for record in records for value in record)
    if key:
        return f"1|{tr_id}|{len(records):03d}|{crypto.encrypt(payload, key=key, iv=iv)}"
    return f"0|{tr_id}|{len(records):03d}|{payload}"


def control(tr_id: str, tr_key: str, msg: tuple[str, str], *, rt_cd: str = "0", **output) -> str:
    body = {"rt_cd": rt_cd, "msg_cd": msg[0], "msg1": msg[1]}
    if output:
        body["output"] = output
    header = {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "Y" if output.get("key") else "N"}
    return json.dumps({"header": header, "body": body})


# --- the hub: sessions and steering ----------------------------------------------------------
@dataclass
class FakeWSSession:
    number: int
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue
    registrations: set[tuple[str, str]] = field(default_factory=set)
    pong_deadline: float | None = None  # monotonic; set while a PINGPONG awaits its echo
    closed: bool = False


class FakeWSHub:
    """The WebSocket side's state (on the fake's state as `ws_hub`); thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.sessions: list[FakeWSSession] = []
        self.connections = 0  # sessions accepted so far
        self.drops = 0  # sessions the fake closed (drop() or an unanswered PINGPONG)
        self.max_registrations = MAX_REGISTRATIONS
        self.received: list[dict] = []  # every subscribe / unsubscribe request, parsed
        self.pongs = 0  # PINGPONG echoes received
        # One AES key / iv per encrypted stream (KIS gives one per subscribe answer).
        self.keys = {tr_id: (secrets.token_hex(16), secrets.token_hex(8)) for tr_id in TR_FILLS}

    # reads
    @property
    def live(self) -> list[FakeWSSession]:
        with self.lock:
            return [s for s in self.sessions if not s.closed]

    def registered(self, tr_id: str, tr_key: str) -> bool:
        return any((tr_id, tr_key) in s.registrations for s in self.live)

    def registrations(self) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for session in self.live:
            out |= session.registrations
        return out

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        """Wait (without blocking the caller's event loop) until predicate() is true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake KIS WebSocket: condition not met in {timeout} s")
            await asyncio.sleep(0.01)

    # steering
    def push_raw(self, text: str, *, sessions: list[FakeWSSession] | None = None) -> int:
        """Send `text` as is to every live session (or the given ones); returns how many."""
        targets = self.live if sessions is None else sessions
        for session in targets:
            self._post(session, text)
        return len(targets)

    def push_trades(self, records: list[list[str]]) -> int:
        """One H0STCNT0 frame per session holding the records of the symbols it subscribed."""
        sent = 0
        for session in self.live:
            mine = [r for r in records if (TR_TRADES, r[0]) in session.registrations]
            if mine:
                self._post(session, data_frame(TR_TRADES, mine))
                sent += 1
        return sent

    def push_notices(self, tr_id: str, records: list[list[str]]) -> int:
        """One encrypted notice frame per session registered on `tr_id` (any HTS id)."""
        key, iv = self.keys[tr_id]
        text = data_frame(tr_id, records, key=key, iv=iv)
        targets = [s for s in self.live if any(t == tr_id for t, _ in s.registrations)]
        return self.push_raw(text, sessions=targets)

    def ping(self, *, expect_answer_within: float | None = None) -> int:
        """PINGPONG to every session; with `expect_answer_within`, a session that has not
        echoed it by then is dropped (as KIS does)."""
        stamp = dt.datetime.now(KST).strftime("%Y%m%d%H%M%S")
        text = json.dumps({"header": {"tr_id": PINGPONG, "datetime": stamp}})
        with self.lock:
            targets = self.live
            if expect_answer_within is not None:
                for session in targets:
                    session.pong_deadline = time.monotonic() + expect_answer_within
        return self.push_raw(text, sessions=targets)

    def drop(self) -> int:
        """Close every live session at once (code 1011), as a network or server failure."""
        targets = self.live
        for session in targets:
            self._post(session, _DROP)
        return len(targets)

    def _post(self, session: FakeWSSession, item) -> None:
        with contextlib.suppress(RuntimeError):  # its loop is gone: the server stopped
            session.loop.call_soon_threadsafe(session.outbox.put_nowait, item)


def ws_hub(state) -> FakeWSHub:
    """The hub of a FakeKISState (made on first use)."""
    with state.lock:
        hub = getattr(state, "ws_hub", None)
        if hub is None:
            hub = state.ws_hub = FakeWSHub()
        return hub


# --- the ASGI side -----------------------------------------------------------------------------
async def websocket_app(state, scope, receive, send) -> None:
    hub = ws_hub(state)
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    with hub.lock:
        hub.connections += 1
        session = FakeWSSession(hub.connections, asyncio.get_running_loop(), asyncio.Queue())
        hub.sessions.append(session)
    incoming = asyncio.ensure_future(receive())
    outgoing = asyncio.ensure_future(session.outbox.get())
    try:
        while True:
            timeout = None
            if session.pong_deadline is not None:
                timeout = max(0.0, session.pong_deadline - time.monotonic())
            done, _ = await asyncio.wait(
                {incoming, outgoing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the PINGPONG went unanswered
                await _close(hub, session, send)
                return
            if incoming in done:
                message = incoming.result()
                if message["type"] == "websocket.disconnect":
                    return
                for answer in _answer(state, hub, session, message):
                    await send({"type": "websocket.send", "text": answer})
                incoming = asyncio.ensure_future(receive())
            if outgoing in done:
                item = outgoing.result()
                if item is _DROP:
                    await _close(hub, session, send)
                    return
                await send({"type": "websocket.send", "text": item})
                outgoing = asyncio.ensure_future(session.outbox.get())
    except OSError:  # the client went away mid-send
        return
    finally:
        session.closed = True
        for task in (incoming, outgoing):
            task.cancel()


async def _close(hub: FakeWSHub, session: FakeWSSession, send) -> None:
    with hub.lock:
        hub.drops += 1
        session.closed = True
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1011})


def _answer(state, hub: FakeWSHub, session: FakeWSSession, message: dict) -> list[str]:
    text = message.get("text")
    if text is None and message.get("bytes") is not None:
        text = message["bytes"].decode("utf-8", "replace")
    try:
        data = json.loads(text or "")
        header = data["header"]
    except (ValueError, KeyError, TypeError):
        return [control("", "", BAD_REQUEST, rt_cd="9")]
    if header.get("tr_id") == PINGPONG:
        with hub.lock:
            hub.pongs += 1
            session.pong_deadline = None
        return []
    try:
        request = data["body"]["input"]
        tr_id, tr_key = str(request["tr_id"]), str(request["tr_key"])
    except (KeyError, TypeError):
        return [control("", "", BAD_REQUEST, rt_cd="9")]
    tr_type = str(header.get("tr_type", ""))
    with hub.lock:
        hub.received.append(
            {
                "tr_type": tr_type,
                "tr_id": tr_id,
                "tr_key": tr_key,
                "session": session.number,
                "custtype": header.get("custtype"),
                "content-type": header.get("content-type"),
            }
        )
    with state.lock:
        approved = header.get("approval_key") in state.approval_keys
    if not approved:
        return [control(tr_id, tr_key, BAD_APPROVAL, rt_cd="9")]
    if tr_id not in FIELD_COUNTS or not tr_key or tr_type not in ("1", "2"):
        return [control(tr_id, tr_key, BAD_TR_ID, rt_cd="1")]
    registration = (tr_id, tr_key)
    with hub.lock:
        if tr_type == "2":
            if registration not in session.registrations:
                return [control(tr_id, tr_key, NOT_SUBSCRIBED, rt_cd="1")]
            session.registrations.discard(registration)
            return [control(tr_id, tr_key, UNSUBSCRIBED)]
        if registration in session.registrations:
            return [control(tr_id, tr_key, ALREADY, rt_cd="1")]
        if len(session.registrations) >= hub.max_registrations:
            return [control(tr_id, tr_key, MAX_OVER, rt_cd="1")]
        session.registrations.add(registration)
    if tr_id in TR_FILLS:
        key, iv = hub.keys[tr_id]
        return [control(tr_id, tr_key, SUBSCRIBED, key=key, iv=iv)]
    return [control(tr_id, tr_key, SUBSCRIBED)]
