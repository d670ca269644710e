"""kis.frames: control messages, data frames, H0STCNT0 trades and H0STCNI0/9 notices."""

import datetime as dt
import json
from decimal import Decimal

import pytest

from kis.frames import (
    FILL_FIELDS,
    TR_FILLS_REAL,
    TR_FILLS_VIRTUAL,
    TR_TRADES,
    TRADE_FIELDS,
    Control,
    DataFrame,
    FrameError,
    parse_fill_notices,
    parse_message,
    parse_trades,
    split_records,
)
from kis.testing.fake_ws import data_frame, notice_record, trade_record
from marketdata.types import Tick

KST = dt.timezone(dt.timedelta(hours=9))
AT = dt.datetime(2026, 3, 3, 9, 0, 5, tzinfo=KST)


def test_the_documented_layouts():
    assert len(TRADE_FIELDS) == 46 and len(FILL_FIELDS) == 26
    assert TRADE_FIELDS[:3] == ("MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR")
    assert TRADE_FIELDS[33] == "BSOP_DATE" and TRADE_FIELDS[12] == "CNTG_VOL"
    assert FILL_FIELDS[13] == "CNTG_YN"


# --- control messages ---------------------------------------------------------------------------
def _control(rt_cd, msg1, *, tr_id="H0STCNT0", tr_key="005930", output=None, msg_cd="OPSP0000"):
    body = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body})


def test_subscribe_answer_with_the_aes_key():
    key, iv = "k" * 32, "i" * 16
    msg = parse_message(_control("0", "SUBSCRIBE SUCCESS", output={"iv": iv, "key": key}))
    assert isinstance(msg, Control)
    assert (msg.kind, msg.tr_id, msg.tr_key, msg.key, msg.iv) == (
        "subscribed",
        "H0STCNT0",
        "005930",
        key,
        iv,
    )
    assert msg.ok
    assert key not in repr(msg) and iv not in repr(msg)


@pytest.mark.parametrize(
    ("rt_cd", "msg1", "kind", "ok"),
    [
        ("0", "UNSUBSCRIBE SUCCESS", "unsubscribed", True),
        ("1", "ALREADY IN SUBSCRIBE", "already_subscribed", True),
        ("1", "MAX SUBSCRIBE OVER", "limit", False),
        ("9", "invalid approval : NOT FOUND", "error", False),
        ("1", "SUBSCRIBE ERROR : invalid tr_id", "error", False),
    ],
)
def test_control_kinds(rt_cd, msg1, kind, ok):
    msg = parse_message(_control(rt_cd, msg1))
    assert (msg.kind, msg.ok, msg.msg1) == (kind, ok, msg1)


def test_pingpong():
    msg = parse_message('{"header":{"tr_id":"PINGPONG","datetime":"20260303090000"}}')
    assert msg.kind == "pingpong" and msg.ok


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "not JSON"),
        ('{"body": {}}', "no header object"),
        ('{"header": {}}', "no header.tr_id"),
        ('{"header": {"tr_id": "H0STCNT0"}}', "H0STCNT0 has no body object"),
        ('{"header": {"tr_id": "H0STCNT0"}, "body": {"msg1": "x"}}', "no body.rt_cd"),
        ("", "empty"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_control_messages(text, error):
    with pytest.raises(FrameError, match=error):
        parse_message(text)


# --- data frames ----------------------------------------------------------------------------------
def test_one_trade_record():
    text = data_frame(
        TR_TRADES, [trade_record("005930", AT, 70100, volume=12, day_volume=3456, prev_close=70500)]
    )
    frame = parse_message(text)
    assert frame == DataFrame(False, TR_TRADES, 1, text.split("|", 3)[3])
    [trade] = parse_trades(frame.payload, frame.count)
    assert trade.tick == Tick(
        "005930", dt.datetime(2026, 3, 3, 0, 0, 5, tzinfo=dt.UTC), Decimal(70100), 12, 3456
    )
    assert trade.tick.time.tzinfo is dt.UTC
    assert trade.prev_close == Decimal(70500) and not trade.halted


def test_several_records_in_one_frame():
    records = [
        trade_record("005930", AT, 70000, volume=1, prev_close=69000),
        trade_record("005930", AT + dt.timedelta(seconds=1), 70100, volume=2, prev_close=69000),
        trade_record("000660", AT + dt.timedelta(seconds=2), 180000, volume=3, halted=True),
    ]
    frame = parse_message(data_frame(TR_TRADES, records))
    assert frame.count == 3
    trades = parse_trades(frame.payload, frame.count)
    assert [(t.tick.symbol, t.tick.price, t.tick.volume) for t in trades] == [
        ("005930", 70000, 1),
        ("005930", 70100, 2),
        ("000660", 180000, 3),
    ]
    assert [t.tick.time.second for t in trades] == [5, 6, 7]
    assert [t.prev_close for t in trades] == [69000, 69000, 180000]
    assert trades[2].halted


def test_prev_close_from_an_unsigned_change_and_the_sign_field():
    record = trade_record("005930", AT, 70000, prev_close=71000)
    record[4] = "1000"  # PRDY_VRSS without its sign; PRDY_VRSS_SIGN 5 says down
    [trade] = parse_trades("^".join(record), 1)
    assert trade.prev_close == 71000


def test_the_time_is_kst_on_the_business_date():
    record = trade_record("005930", AT, 70000)
    record[1], record[33] = "152959", "20260303"
    [trade] = parse_trades("^".join(record), 1)
    assert trade.tick.time == dt.datetime(2026, 3, 3, 6, 29, 59, tzinfo=dt.UTC)


def _bad(index, value):
    record = trade_record("005930", AT, 70000)
    record[index] = value
    return "^".join(record)


@pytest.mark.parametrize(
    ("payload", "count", "error"),
    [
        (
            "^".join(trade_record("005930", AT, 70000)[:45]),
            1,
            "45 fields for 1 record.*expected 46",
        ),
        ("^".join(trade_record("005930", AT, 70000)), 2, "46 fields for 2 record.*expected 92"),
        (_bad(2, "7O000"), 1, r"record 1 \(005930\): STCK_PRPR \(price\) '7O000' is not a number"),
        (_bad(2, "0"), 1, "STCK_PRPR.*is not > 0"),
        (_bad(2, "NaN"), 1, "not a finite number"),
        (_bad(12, "-3"), 1, "CNTG_VOL \\(volume\\) '-3' is not a whole number"),
        (_bad(13, "1.5"), 1, "ACML_VOL"),
        (_bad(1, "0905"), 1, "time '0905' is not HHMMSS"),
        (_bad(1, "250000"), 1, "time '250000' is not a time of day"),
        (_bad(33, "2026-03-03"), 1, "date '2026-03-03' is not YYYYMMDD"),
        (_bad(0, ""), 1, "MKSC_SHRN_ISCD \\(symbol\\) is empty"),
        (_bad(4, "x"), 1, "PRDY_VRSS"),
    ],
)
def test_malformed_trades(payload, count, error):
    with pytest.raises(FrameError, match=error):
        parse_trades(payload, count)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("0|H0STCNT0|001", "3 '\\|'-separated parts, expected 4"),
        ("2|H0STCNT0|001|x", "encrypted flag is '2'"),
        ("0|H0STASP0|001|x", "unknown tr_id 'H0STASP0'"),
        ("0|H0STCNT0|000|x", "record count '000' is not a positive number"),
        ("0|H0STCNT0|abc|x", "record count 'abc'"),
        ("0|H0STCNT0|001|", "empty payload"),
        ("garbage", "1 '\\|'-separated parts"),
    ],
)
def test_malformed_data_frames(text, error):
    with pytest.raises(FrameError, match=error):
        parse_message(text)


def test_split_records_knows_only_known_streams():
    with pytest.raises(FrameError, match="unknown tr_id 'H0XXXXX0'"):
        split_records("H0XXXXX0", "a^b", 1)


# --- fill notices ---------------------------------------------------------------------------------
DAY = dt.date(2026, 3, 3)


def test_a_fill_notice():
    record = notice_record(
        order_no="0000012345",
        symbol="005930",
        side="SELL",
        quantity=3,
        price=71200,
        at=AT,
        order_quantity=5,
        order_price=71500,
        name="삼성전자",
    )
    [notice] = parse_fill_notices(TR_FILLS_REAL, "^".join(record), 1, day=DAY)
    assert notice.kind == "fill" and notice.is_fill and not notice.rejected
    assert (notice.order_no, notice.side, notice.symbol) == ("0000012345", "SELL", "005930")
    assert (notice.quantity, notice.price) == (3, Decimal(71200))
    assert (notice.order_quantity, notice.order_price) == (5, Decimal(71500))
    assert notice.time == dt.datetime(2026, 3, 3, 0, 0, 5, tzinfo=dt.UTC)
    assert notice.account == "5012345601" and notice.name == "삼성전자"


def test_acceptance_rejection_amend_and_cancel_notices():
    common = {"symbol": "005930", "quantity": 5, "price": 71500, "at": AT, "is_fill": False}
    records = [
        notice_record(order_no="1", **common),
        notice_record(order_no="2", rejected=True, **common),
        notice_record(order_no="3", amend_cancel="amend", original_order_no="1", **common),
        notice_record(order_no="4", amend_cancel="cancel", original_order_no="1", **common),
    ]
    payload = "^".join(v for r in records for v in r)
    notices = parse_fill_notices(TR_FILLS_VIRTUAL, payload, 4, day=DAY)
    assert [n.kind for n in notices] == [
        "accepted",
        "rejected",
        "amend_accepted",
        "cancel_accepted",
    ]
    assert notices[3].original_order_no == "1" and not any(n.is_fill for n in notices)


def _bad_notice(index, value):
    record = notice_record(order_no="9", symbol="005930", quantity=1, price=100, at=AT)
    record[index] = value
    return "^".join(record)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (_bad_notice(4, "03"), "SELN_BYOV_CLS \\(side\\) '03'"),
        (_bad_notice(2, ""), "ODER_NO \\(order number\\) is empty"),
        (_bad_notice(8, ""), "STCK_SHRN_ISCD"),
        (_bad_notice(13, "3"), "CNTG_YN '3'"),
        (_bad_notice(9, "0"), "a fill needs CNTG_QTY and CNTG_UNPR > 0"),
        (_bad_notice(10, "abc"), "CNTG_UNPR \\(price\\) 'abc' is not a number"),
        (_bad_notice(11, "9999"), "time '9999' is not HHMMSS"),
        (_bad_notice(0, "a^b"), "27 fields for 1 record"),
    ],
)
def test_malformed_notices(payload, error):
    with pytest.raises(FrameError, match=error):
        parse_fill_notices(TR_FILLS_REAL, payload, 1, day=DAY)


def test_notices_only_from_notice_streams():
    with pytest.raises(FrameError, match="'H0STCNT0' is not a fill notice stream"):
        parse_fill_notices(TR_TRADES, "x", 1, day=DAY)
