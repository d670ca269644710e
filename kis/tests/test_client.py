"""KISClient against the fake KIS server: headers, retries, errors, paging, typed answers."""

import dataclasses
import datetime as dt
import logging
from decimal import Decimal

import pytest

from kis import config as kc
from kis.client import KST, KISClient
from kis.errors import KISError, KISNotSupported, KISRateLimited, KISUnavailable
from qbsite.exceptions import InvalidInput


@pytest.fixture
async def kis(kis_config, aredis):
    async with KISClient(kis_config, redis=aredis, backoff_base=0.01) as client:
        yield client


def uapi_requests(fake, path=None):
    return [r for r in fake.state.requests if r["path"].startswith(path or "/uapi")]


async def test_current_price_is_typed_and_sent_with_kis_headers(fake_kis, kis):
    fake_kis.state.set_price("005930", 71500, acml_vol=1234567, prdy_vrss=-500, prdy_ctrt="-0.69")
    quote = await kis.current_price("005930")
    assert quote.price == Decimal(71500) and isinstance(quote.price, Decimal)
    assert quote.change == Decimal(-500) and quote.change_rate == Decimal("-0.69")
    assert quote.volume == 1234567
    assert quote.received_at.tzinfo is not None
    (request,) = uapi_requests(fake_kis)
    assert request["tr_id"] == "FHKST01010100"
    assert request["params"] == {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


async def test_rate_limited_answers_are_retried_then_succeed(fake_kis, kis):
    fake_kis.state.fail_next(
        2, status=500, msg_cd="EGW00201", msg1="초당 거래건수를 초과하였습니다."
    )
    quote = await kis.current_price("005930")
    assert quote.price > 0
    assert [r["status"] for r in uapi_requests(fake_kis)] == [500, 500, 200]


@pytest.mark.parametrize("fault", [{"status": 502}, {"status": 503}, {"drop": True}])
async def test_5xx_and_dropped_connections_are_retried(fake_kis, kis, fault):
    fake_kis.state.fail_next(2, **fault)
    assert (await kis.current_price("000660")).price > 0
    assert len(uapi_requests(fake_kis)) == 3


async def test_retries_are_bounded(fake_kis, kis_config, aredis):
    config = dataclasses.replace(kis_config, max_retries=2)
    fake_kis.state.fail_next(10, status=503)
    async with KISClient(config, redis=aredis, backoff_base=0.01) as kis:
        with pytest.raises(KISUnavailable, match="HTTP 503"):
            await kis.current_price("005930")
    assert len(uapi_requests(fake_kis)) == 3


async def test_rate_limited_to_the_end_raises_rate_limited(fake_kis, kis_config, aredis):
    config = dataclasses.replace(kis_config, max_retries=1)
    fake_kis.state.fail_next(
        5, status=500, msg_cd="EGW00201", msg1="초당 거래건수를 초과하였습니다."
    )
    async with KISClient(config, redis=aredis, backoff_base=0.01) as kis:
        with pytest.raises(KISRateLimited) as failed:
            await kis.current_price("005930")
    assert failed.value.msg_cd == "EGW00201"


async def test_a_refusal_raises_kis_error_with_its_code_and_is_not_retried(fake_kis, kis):
    fake_kis.state.fail_next(1, status=500, msg_cd="OPSQ0001", msg1="조회할 자료가 없습니다.")
    with pytest.raises(KISError) as refused:
        await kis.current_price("005930")
    error = refused.value
    assert type(error) is KISError
    assert (error.msg_cd, error.msg1, error.tr_id) == (
        "OPSQ0001",
        "조회할 자료가 없습니다.",
        "FHKST01010100",
    )
    assert "OPSQ0001" in str(error) and "조회할 자료가 없습니다." in str(error)
    assert len(uapi_requests(fake_kis)) == 1


async def test_an_unknown_symbol_is_kis_error(fake_kis, kis):
    fake_kis.state.generate_history = False
    with pytest.raises(KISError) as refused:
        await kis.current_price("999999")
    assert refused.value.msg_cd == "APBK1001"


async def test_an_expired_token_is_replaced_once(fake_kis, kis):
    fake_kis.state.token_reuse = 0
    await kis.current_price("005930")
    fake_kis.state.expire_tokens()
    await kis.current_price("005930")
    assert fake_kis.state.token_issuances == 2
    assert [r["status"] for r in uapi_requests(fake_kis)] == [200, 500, 200]


async def test_daily_candles_are_paged_by_date(fake_kis, kis):
    start, end = dt.date(2024, 1, 1), dt.date(2024, 12, 31)
    candles = await kis.daily_candles("005930", start, end)
    expected = fake_kis.state.daily_rows("005930", start, end)
    assert len(candles) == len(expected) == 262  # weekdays of 2024
    calls = uapi_requests(fake_kis, kc.PATH_DAILY_CANDLES)
    assert len(calls) == 3  # 100 rows a call
    assert calls[0]["params"]["FID_INPUT_DATE_2"] == "20241231"
    # The next call ends the day before the oldest row so far.
    oldest_first_page = expected[99][0]
    assert calls[1]["params"]["FID_INPUT_DATE_2"] == (
        oldest_first_page - dt.timedelta(days=1)
    ).strftime("%Y%m%d")
    assert [c.time for c in candles] == sorted(c.time for c in candles)
    first = candles[0]
    assert first.time == dt.datetime(2024, 1, 1, tzinfo=KST) and first.interval == "1d"
    _, o, h, lo, c, v = expected[-1]
    assert (first.open, first.high, first.low, first.close, first.volume) == (o, h, lo, c, v)
    assert isinstance(first.close, Decimal)


async def test_daily_candles_of_a_short_range_take_one_call(fake_kis, kis):
    candles = await kis.daily_candles("005930", dt.date(2024, 3, 4), dt.date(2024, 3, 8))
    assert len(candles) == 5
    assert len(uapi_requests(fake_kis)) == 1
    with pytest.raises(InvalidInput, match="after end"):
        await kis.daily_candles("005930", dt.date(2024, 3, 8), dt.date(2024, 3, 4))


async def test_minute_candles_of_a_past_day_come_120_a_call(fake_kis, kis):
    day = dt.date(2024, 3, 4)
    candles = await kis.minute_candles("005930", day)
    assert len(candles) == 391  # 09:00 .. 15:30
    assert candles[0].time == dt.datetime(2024, 3, 4, 9, 0, tzinfo=KST)
    assert candles[-1].time == dt.datetime(2024, 3, 4, 15, 30, tzinfo=KST)
    calls = uapi_requests(fake_kis)
    assert {c["tr_id"] for c in calls} == {"FHKST03010230"}
    assert len(calls) == 4
    assert [c["params"]["FID_INPUT_HOUR_1"] for c in calls[:2]] == ["153000", "133000"]


async def test_todays_minute_candles_come_30_a_call(fake_kis, kis):
    today = dt.datetime.now(KST).date()
    fake_kis.state.minute_candles["005930"] = {
        dt.datetime.combine(today, dt.time(9, m)): (70000, 70100, 69900, 70050, 10 + m)
        for m in range(50)
    }
    candles = await kis.minute_candles("005930", today, until=dt.time(9, 49))
    assert [c.volume for c in candles] == [10 + m for m in range(50)]
    calls = uapi_requests(fake_kis)
    assert {c["tr_id"] for c in calls} == {"FHKST03010200"}
    assert [c["params"]["FID_INPUT_HOUR_1"] for c in calls] == ["094900", "091900"]


async def test_an_order_is_accepted_filled_and_reported(fake_kis, kis):
    fake_kis.state.set_price("005930", 71000)
    ack = await kis.order_cash("buy", "005930", 10, Decimal(71000))
    assert ack.order_no and ack.org_no == fake_kis.state.branch
    assert ack.time.tzinfo is not None
    (call,) = uapi_requests(fake_kis)
    assert call["tr_id"] == "TTTC0012U"

    fake_kis.state.fill(ack.order_no, 4, 71000)  # partial
    (open_order,) = await kis.cancellable_orders()
    assert (open_order.order_no, open_order.side, open_order.filled) == (ack.order_no, "buy", 4)
    assert open_order.cancellable == 6 and open_order.price == Decimal(71000)

    cancel = await kis.order_cancel(ack.org_no, ack.order_no)
    assert cancel.order_no != ack.order_no
    assert await kis.cancellable_orders() == []

    today = dt.datetime.now(KST).date()
    (fills,) = await kis.daily_fills(today, today)
    assert (fills.order_no, fills.filled, fills.average_price) == (ack.order_no, 4, Decimal(71000))
    assert fills.filled_amount == Decimal(284000) and fills.cancelled and fills.remaining == 0

    balance = await kis.balance()
    (position,) = balance.positions
    assert (position.symbol, position.quantity, position.average_price) == ("005930", 4, 71000)
    assert balance.cash == Decimal(100_000_000 - 284_000)


async def test_a_market_sell_and_its_full_fill(fake_kis, kis):
    fake_kis.state.set_price("000660", 150000)
    fake_kis.state.set_position("000660", 5, 140000)
    ack = await kis.order_cash("sell", "000660", 5, None)
    (call,) = uapi_requests(fake_kis)
    assert call["tr_id"] == "TTTC0011U"
    assert fake_kis.state.orders[ack.order_no].ord_dvsn == "01"
    fake_kis.state.fill(ack.order_no, 5, 150100)
    balance = await kis.balance()
    assert balance.positions == []
    assert balance.cash == Decimal(100_000_000 + 750_500)


async def test_the_order_body_is_upper_case_strings(fake_kis, kis):
    await kis.order_cash("buy", "005930", 3, Decimal(70000))
    order = next(iter(fake_kis.state.orders.values()))
    assert (order.quantity, order.price, order.ord_dvsn) == (3, Decimal(70000), "00")


@pytest.mark.parametrize(
    ("quantity", "price", "msg_cd"),
    [
        (10, Decimal(71010), "APBK1669"),  # off the 100-won tick
        (10_000, Decimal(71000), "APBK0952"),  # 710 million won > 100 million cash
    ],
)
async def test_orders_kis_refuses_raise_its_message(fake_kis, kis, quantity, price, msg_cd):
    with pytest.raises(KISError) as refused:
        await kis.order_cash("buy", "005930", quantity, price)
    assert refused.value.msg_cd == msg_cd and refused.value.msg1
    assert refused.value.tr_id == "TTTC0012U"
    assert fake_kis.state.orders == {}


async def test_cancelling_an_unknown_order_raises(fake_kis, kis):
    with pytest.raises(KISError) as refused:
        await kis.order_cancel("06010", "0000009999")
    assert refused.value.msg_cd == "APBK0918"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hold", "005930", 1, None), "side"),
        (("buy", "5930", 1, None), "symbol"),
        (("buy", "005930", 0, None), "quantity"),
        (("buy", "005930", 1.5, None), "quantity"),
        (("buy", "005930", 1, Decimal("71000.5")), "whole number of won"),
        (("buy", "005930", 1, 71000.0), "Decimal"),
    ],
)
async def test_bad_order_input_is_refused_before_kis(fake_kis, kis, args, message):
    with pytest.raises(InvalidInput, match=message):
        await kis.order_cash(*args)
    assert uapi_requests(fake_kis) == []


async def test_an_order_is_not_resent_after_a_5xx(fake_kis, kis):
    # KIS may have placed it: the caller reconciles instead of sending it twice.
    fake_kis.state.fail_next(1, status=502, path=kc.PATH_ORDER_CASH)
    with pytest.raises(KISUnavailable):
        await kis.order_cash("buy", "005930", 1, Decimal(70000))
    assert len(uapi_requests(fake_kis)) == 1


async def test_an_order_is_resent_after_rate_limiting(fake_kis, kis):
    fake_kis.state.fail_next(1, status=500, msg_cd="EGW00201", path=kc.PATH_ORDER_CASH)
    ack = await kis.order_cash("buy", "005930", 1, Decimal(70000))
    assert list(fake_kis.state.orders) == [ack.order_no]


async def test_balance_is_paged_with_tr_cont_and_ctx_area(fake_kis, kis):
    fake_kis.state.balance_page_size = 50
    for n in range(120):
        fake_kis.state.set_position(f"{n + 100000:06d}", n + 1, 1000)
    balance = await kis.balance()
    assert len(balance.positions) == 120
    assert len({p.symbol for p in balance.positions}) == 120
    calls = uapi_requests(fake_kis, kc.PATH_BALANCE)
    assert [c["tr_cont"] for c in calls] == ["", "N", "N"]
    assert [c["params"]["CTX_AREA_NK100"] for c in calls] == ["", "50", "100"]
    assert balance.cash == Decimal(100_000_000)


async def test_virtual_accounts_have_virtual_tr_ids(fake_kis, kis_config, aredis):
    config = dataclasses.replace(kis_config, env="virtual", rate_per_second=50)
    async with KISClient(config, redis=aredis) as kis:
        await kis.order_cash("buy", "005930", 1, Decimal(70000))
        await kis.balance()
        with pytest.raises(KISNotSupported):
            await kis.cancellable_orders()
    assert [r["tr_id"] for r in uapi_requests(fake_kis)] == ["VTTC0012U", "VTTC8434R"]


async def test_logs_and_errors_never_show_secrets(fake_kis, kis, caplog):
    caplog.set_level(logging.DEBUG)
    fake_kis.state.fail_next(1, status=500, msg_cd="EGW00201")
    await kis.balance()
    await kis.order_cash("buy", "005930", 1, Decimal(70000))
    with pytest.raises(KISError) as refused:
        await kis.order_cash("buy", "005930", 1, Decimal(70001))
    token = fake_kis.state.tokens[0].token
    text = caplog.text + str(refused.value) + repr(refused.value.details) + repr(kis.config)
    assert "/uapi/domestic-stock/v1/trading/inquire-balance" in caplog.text  # it did log
    assert "retry 1 of" in caplog.text
    for secret in (kis.config.app_key, kis.config.app_secret, token, kis.config.cano):
        assert secret not in text
