"""KIS WebSocket messages: parsing, no I/O.

Two kinds of text messages arrive on the KIS WebSocket:

- control messages, JSON: `{"header": {"tr_id", "tr_key", "encrypt"}, "body": {"rt_cd", "msg_cd",
  "msg1", "output": {"iv", "key"}}}`: subscribe / unsubscribe answers (the AES key and iv of an
  encrypted stream come in the subscribe answer) and the server's PINGPONG heartbeat;
- data frames, `<encrypted 0|1>|<tr_id>|<record count NNN>|<payload>`: `count` records of the
  stream's fields, all joined by `^` (an encrypted payload is base64 AES-256-CBC, kis.crypto).

`parse_message(text)` tells them apart; `parse_trades` turns H0STCNT0 records into our Tick (plus
the previous close KIS gives with each print); `parse_fill_notices` turns H0STCNI0 / H0STCNI9
records into FillNotice. Anything malformed raises FrameError naming what is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from kis.errors import KISError
from marketdata.types import Tick

KST = ZoneInfo("Asia/Seoul")

# TR ids and the session limit (KIS.md). K1's kis.config holds the REST ones; these are the
# WebSocket side's.
TR_TRADES = "H0STCNT0"  # executed prices, KRX
TR_FILLS_REAL = "H0STCNI0"  # our own orders' notices, real account
TR_FILLS_VIRTUAL = "H0STCNI9"  # the same, virtual (mock trading) account
TR_FILLS = (TR_FILLS_REAL, TR_FILLS_VIRTUAL)
PINGPONG = "PINGPONG"
MSG_IN_USE = "OPSP8996"  # "ALREADY IN USE appkey": another session holds the app key
MAX_REGISTRATIONS = 41

# H0STCNT0: 46 fields per record, in this order (KIS.md).
TRADE_FIELDS = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL",
    "ACML_VOL", "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR",
    "SELN_CNTG_SMTN", "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE", "PRDY_VOL_VRSS_ACML_VOL_RATE",
    "OPRC_HOUR", "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR", "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN",
    "HGPR_VRSS_PRPR", "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN", "LWPR_VRSS_PRPR", "BSOP_DATE",
    "NEW_MKOP_CLS_CODE", "TRHT_YN", "ASKP_RSQN1", "BIDP_RSQN1", "TOTAL_ASKP_RSQN",
    "TOTAL_BIDP_RSQN", "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL", "PRDY_SMNS_HOUR_ACML_VOL_RATE",
    "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE", "VI_STND_PRC",
)  # fmt: skip

# H0STCNI0 / H0STCNI9: 26 fields per record (the order most of KIS's samples give; one revision
# of its examples_llm sample lists ODER_QTY at 3 and ACNT_NO2 at 16 instead of OODER_NO at 3 and
# ODER_QTY at 16, which the other samples and clients contradict).
FILL_FIELDS = (
    "CUST_ID", "ACNT_NO", "ODER_NO", "OODER_NO", "SELN_BYOV_CLS", "RCTF_CLS", "ODER_KIND",
    "ODER_COND", "STCK_SHRN_ISCD", "CNTG_QTY", "CNTG_UNPR", "STCK_CNTG_HOUR", "RFUS_YN",
    "CNTG_YN", "ACPT_YN", "BRNC_NO", "ODER_QTY", "ACNT_NAME", "ORD_COND_PRC", "ORD_EXG_GB",
    "POPUP_YN", "FILLER", "CRDT_CLS", "CRDT_LOAN_DATE", "CNTG_ISNM40", "ODER_PRC",
)  # fmt: skip

FIELD_COUNTS = {TR_TRADES: len(TRADE_FIELDS), TR_FILLS_REAL: len(FILL_FIELDS)}
FIELD_COUNTS[TR_FILLS_VIRTUAL] = len(FILL_FIELDS)
KNOWN_TR_IDS = tuple(FIELD_COUNTS)

_T = {name: n for n, name in enumerate(TRADE_FIELDS)}
_F = {name: n for n, name in enumerate(FILL_FIELDS)}
# PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down.
_DOWN_SIGNS = {"4", "5"}
_SIDES = {"01": "SELL", "02": "BUY"}


class FrameError(KISError):
    """A KIS WebSocket message we cannot read; the message says what is wrong with it."""

    code = "kis_frame_invalid"


# --- control messages ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Control:
    """A JSON control message. `kind`: "pingpong", "subscribed", "unsubscribed",
    "already_subscribed", "limit" (too many registrations), "in_use" (another session holds
    the app key: this one gets nothing), "error" (any other refusal)."""

    kind: str
    tr_id: str
    tr_key: str
    rt_cd: str
    msg_cd: str
    msg1: str
    encrypted: bool
    key: str | None = None
    iv: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind in ("pingpong", "subscribed", "unsubscribed", "already_subscribed")

    def __repr__(self) -> str:  # the AES key and iv stay out of logs
        return (
            f"Control(kind={self.kind!r}, tr_id={self.tr_id!r}, tr_key={self.tr_key!r}, "
            f"rt_cd={self.rt_cd!r}, msg_cd={self.msg_cd!r}, msg1={self.msg1!r})"
        )


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A data frame as sent: the payload still encrypted when `encrypted`."""

    encrypted: bool
    tr_id: str
    count: int
    payload: str


def parse_message(text: str | bytes) -> Control | DataFrame:
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("message is not UTF-8 text.") from None
    if not text:
        raise FrameError("message is empty.")
    if text[0] == "{":
        return parse_control(text)
    return parse_data_frame(text)


def parse_control(text: str) -> Control:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"control message is not JSON ({exc.msg} at {exc.pos}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict):
        raise FrameError("control message has no header object.")
    header = data["header"]
    tr_id = _text(header.get("tr_id"))
    if not tr_id:
        raise FrameError("control message has no header.tr_id.")
    encrypted = _text(header.get("encrypt")).upper() == "Y"
    tr_key = _text(header.get("tr_key"))
    if tr_id == PINGPONG:
        return Control(PINGPONG.lower(), tr_id, tr_key, "", "", "", encrypted)
    body = data.get("body")
    if not isinstance(body, dict):
        raise FrameError(f"control message for {tr_id} has no body object.")
    rt_cd, msg_cd, msg1 = (_text(body.get(k)) for k in ("rt_cd", "msg_cd", "msg1"))
    if not rt_cd:
        raise FrameError(f"control message for {tr_id} has no body.rt_cd.")
    output = body.get("output") if isinstance(body.get("output"), dict) else {}
    key, iv = _text(output.get("key")) or None, _text(output.get("iv")) or None
    upper = msg1.upper()
    if rt_cd == "0":
        kind = "unsubscribed" if upper.startswith("UNSUB") else "subscribed"
    elif msg_cd == MSG_IN_USE or "ALREADY IN USE" in upper:
        kind = "in_use"  # not "ALREADY IN SUBSCRIBE": the session itself is refused
    elif "ALREADY" in upper:
        kind = "already_subscribed"
    elif "MAX SUBSCRIBE" in upper:
        kind = "limit"
    else:
        kind = "error"
    return Control(kind, tr_id, tr_key, rt_cd, msg_cd, msg1, encrypted, key, iv)


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value))


# --- data frames -----------------------------------------------------------------------------
def parse_data_frame(text: str) -> DataFrame:
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise FrameError(
            f"data frame has {len(parts)} '|'-separated parts, expected 4 "
            f"(encrypted|tr_id|count|payload): {_preview(text)}"
        )
    flag, tr_id, count_text, payload = parts
    if flag not in ("0", "1"):
        raise FrameError(f"data frame's encrypted flag is {flag!r}, expected '0' or '1'.")
    if tr_id not in FIELD_COUNTS:
        raise FrameError(
            f"data frame for unknown tr_id {tr_id!r} (known: {', '.join(FIELD_COUNTS)})."
        )
    # isascii: "²".isdigit() is True but int() refuses it.
    if not (count_text.isascii() and count_text.isdigit()) or int(count_text) < 1:
        raise FrameError(f"{tr_id} frame's record count {count_text!r} is not a positive number.")
    if not payload:
        raise FrameError(f"{tr_id} frame has an empty payload.")
    return DataFrame(flag == "1", tr_id, int(count_text), payload)


def split_records(tr_id: str, payload: str, count: int) -> list[list[str]]:
    """The `count` records of a (decrypted) payload, each a list of the stream's fields."""
    width = FIELD_COUNTS.get(tr_id)
    if width is None:
        raise FrameError(f"unknown tr_id {tr_id!r} (known: {', '.join(FIELD_COUNTS)}).")
    fields = payload.split("^")
    if len(fields) != width * count:
        raise FrameError(
            f"{tr_id} frame has {len(fields)} fields for {count} record(s): expected "
            f"{width * count} ({width} per record); truncated or not a {tr_id} payload."
        )
    return [fields[n * width : (n + 1) * width] for n in range(count)]


def _preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --- H0STCNT0: trades ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Trade:
    """One H0STCNT0 print: our Tick, the previous close (price - PRDY_VRSS) and the halt flag."""

    tick: Tick
    prev_close: Decimal
    halted: bool


def parse_trades(payload: str, count: int) -> list[Trade]:
    return [_trade(record, n) for n, record in enumerate(split_records(TR_TRADES, payload, count))]


def _trade(record: list[str], n: int) -> Trade:
    where = f"{TR_TRADES} record {n + 1}"
    symbol = record[_T["MKSC_SHRN_ISCD"]].strip()
    if not symbol:
        raise FrameError(f"{where}: MKSC_SHRN_ISCD (symbol) is empty.")
    where = f"{where} ({symbol})"
    moment = kst_time(record[_T["BSOP_DATE"]], record[_T["STCK_CNTG_HOUR"]], where=where)
    price = _decimal(record[_T["STCK_PRPR"]], "STCK_PRPR (price)", where)
    if price <= 0:
        raise FrameError(f"{where}: STCK_PRPR (price) {record[_T['STCK_PRPR']]!r} is not > 0.")
    volume = _int(record[_T["CNTG_VOL"]], "CNTG_VOL (volume)", where)
    day_volume = _int(record[_T["ACML_VOL"]], "ACML_VOL (day volume)", where)
    change = abs(_decimal(record[_T["PRDY_VRSS"]], "PRDY_VRSS (change)", where))
    if record[_T["PRDY_VRSS_SIGN"]].strip() in _DOWN_SIGNS:
        change = -change
    return Trade(
        tick=Tick(symbol, moment, price, volume, day_volume),
        prev_close=price - change,
        halted=record[_T["TRHT_YN"]].strip().upper() == "Y",
    )


def kst_time(date_text: str, hhmmss: str, *, where: str) -> dt.datetime:
    """YYYYMMDD + HHMMSS in Asia/Seoul -> aware UTC."""
    date_text, hhmmss = date_text.strip(), hhmmss.strip()
    try:
        day = dt.datetime.strptime(date_text, "%Y%m%d").date()
    except ValueError:
        raise FrameError(f"{where}: date {date_text!r} is not YYYYMMDD.") from None
    return kst_clock(day, hhmmss, where=where)


def kst_clock(day: dt.date, hhmmss: str, *, where: str) -> dt.datetime:
    hhmmss = hhmmss.strip()
    if len(hhmmss) != 6 or not (hhmmss.isascii() and hhmmss.isdigit()):
        raise FrameError(f"{where}: time {hhmmss!r} is not HHMMSS.")
    try:
        clock = dt.time(int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:]))
    except ValueError:
        raise FrameError(f"{where}: time {hhmmss!r} is not a time of day.") from None
    return dt.datetime.combine(day, clock, KST).astimezone(dt.UTC)


def _decimal(text: str, name: str, where: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise FrameError(f"{where}: {name} {text!r} is not a number.") from None
    if not value.is_finite():
        raise FrameError(f"{where}: {name} {text!r} is not a finite number.")
    return value


def _int(text: str, name: str, where: str) -> int:
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()):
        raise FrameError(f"{where}: {name} {text!r} is not a whole number >= 0.")
    return int(stripped)


# --- H0STCNI0 / H0STCNI9: our orders' notices ------------------------------------------------
@dataclass(frozen=True, slots=True)
class FillNotice:
    """One notice about our own order.

    `is_fill` (CNTG_YN 2): a fill of `quantity` at `price`. Otherwise (CNTG_YN 1) an order,
    amend or cancel was accepted, or refused (`rejected`); for those KIS puts the order's
    quantity and price in the fill fields. `amend_cancel`: "" (a new order), "amend", "cancel".
    `time`: STCK_CNTG_HOUR on the KST day the notice arrived (the notice carries no date).
    """

    account: str
    order_no: str
    original_order_no: str
    side: str  # "BUY" / "SELL"
    symbol: str
    quantity: int
    price: Decimal
    time: dt.datetime
    is_fill: bool
    rejected: bool
    amend_cancel: str
    order_quantity: int | None
    order_price: Decimal | None
    accept_status: str  # ACPT_YN: 1 accepted, 2 confirmed, 3 cancelled (IOC / FOK)
    name: str

    @property
    def kind(self) -> str:
        """ "fill", "rejected", "accepted", "amend_accepted" or "cancel_accepted"."""
        if self.is_fill:
            return "fill"
        if self.rejected:
            return "rejected"
        return f"{self.amend_cancel}_accepted" if self.amend_cancel else "accepted"


def parse_fill_notices(tr_id: str, payload: str, count: int, *, day: dt.date) -> list[FillNotice]:
    """Records of a decrypted H0STCNI0 / H0STCNI9 payload; `day`: the KST date of arrival."""
    if tr_id not in TR_FILLS:
        raise FrameError(f"{tr_id!r} is not a fill notice stream ({', '.join(TR_FILLS)}).")
    return [
        _notice(record, n, tr_id, day)
        for n, record in enumerate(split_records(tr_id, payload, count))
    ]


def _notice(record: list[str], n: int, tr_id: str, day: dt.date) -> FillNotice:
    field = dict(zip(FILL_FIELDS, (value.strip() for value in record), strict=True))
    where = f"{tr_id} record {n + 1} (order {field['ODER_NO'] or '?'})"
    if not field["ODER_NO"]:
        raise FrameError(f"{where}: ODER_NO (order number) is empty.")
    side = _SIDES.get(field["SELN_BYOV_CLS"])
    if side is None:
        raise FrameError(
            f"{where}: SELN_BYOV_CLS (side) {field['SELN_BYOV_CLS']!r} is not 01 (sell) "
            "or 02 (buy)."
        )
    if not field["STCK_SHRN_ISCD"]:
        raise FrameError(f"{where}: STCK_SHRN_ISCD (symbol) is empty.")
    if field["CNTG_YN"] not in ("1", "2"):
        raise FrameError(f"{where}: CNTG_YN {field['CNTG_YN']!r} is not 1 (notice) or 2 (fill).")
    is_fill = field["CNTG_YN"] == "2"
    quantity = _int(field["CNTG_QTY"] or "0", "CNTG_QTY (quantity)", where)
    price = _decimal(field["CNTG_UNPR"] or "0", "CNTG_UNPR (price)", where)
    if is_fill and (quantity <= 0 or price <= 0):
        raise FrameError(
            f"{where}: a fill needs CNTG_QTY and CNTG_UNPR > 0, got "
            f"{field['CNTG_QTY']!r} and {field['CNTG_UNPR']!r}."
        )
    return FillNotice(
        account=field["ACNT_NO"],
        order_no=field["ODER_NO"],
        original_order_no=field["OODER_NO"],
        side=side,
        symbol=field["STCK_SHRN_ISCD"],
        quantity=quantity,
        price=price,
        time=kst_clock(day, field["STCK_CNTG_HOUR"], where=where),
        is_fill=is_fill,
        rejected=field["RFUS_YN"] == "1",
        amend_cancel={"1": "amend", "2": "cancel"}.get(field["RCTF_CLS"], ""),
        order_quantity=(_int(field["ODER_QTY"], "ODER_QTY", where) if field["ODER_QTY"] else None),
        order_price=(_decimal(field["ODER_PRC"], "ODER_PRC", where) if field["ODER_PRC"] else None),
        accept_status=field["ACPT_YN"],
        name=field["CNTG_ISNM40"],
    )
