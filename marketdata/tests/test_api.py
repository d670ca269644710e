"""The stocks and market-data endpoints: filters, writes through services, validation, paging."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from marketdata.models import MarketData, Stock
from qbsite.tests.api_factories import (
    CANDLE,
    T0,
    make_candle,
    make_stock,
    make_trade,
    minutes,
    walk,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def stocks(db):
    make_stock("005930", "Samsung Electronics", "KOSPI", "Semiconductors")
    make_stock("000660", "SK hynix", "KOSPI", "Semiconductors")
    make_stock("035720", "Kakao", "KOSPI", "Internet")
    make_stock("247540", "Ecopro BM", "KOSDAQ", "Batteries")
    make_stock("005935", "Samsung Electronics Pref", "KOSPI", "Semiconductors")


def _symbols(response):
    assert response.status_code == 200, response.data
    return [row["symbol"] for row in response.data["results"]]


# --- stocks: reading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["000660", "005930", "005935", "035720", "247540"]),
        ({"market": "KOSDAQ"}, ["247540"]),
        ({"sector": "semiconductors"}, ["000660", "005930", "005935"]),
        ({"search": "0059"}, ["005930", "005935"]),  # symbol prefix
        ({"search": "5930"}, []),  # ... not anywhere in the symbol
        ({"search": "samsung"}, ["005930", "005935"]),  # part of the name, any case
        ({"search": "hynix"}, ["000660"]),
        ({"ordering": "-name"}, ["005935", "005930", "000660", "035720", "247540"]),
    ],
)
def test_stock_filters(params, expected, stocks, client_user, api_client_for):
    assert _symbols(api_client_for(client_user).get("/api/v1/stocks/", params)) == expected


def test_stock_retrieve(stocks, trader, api_client_for):
    response = api_client_for(trader).get("/api/v1/stocks/005930/")
    assert response.status_code == 200
    assert response.data["name"] == "Samsung Electronics"
    assert api_client_for(trader).get("/api/v1/stocks/999999/").status_code == 404


def test_stock_list_queries_are_pinned(
    stocks, client_user, django_assert_num_queries, api_client_for
):
    api = api_client_for(client_user)
    # token + user + the client's groups (role) in one, COUNT, the page.
    with django_assert_num_queries(3):
        assert len(_symbols(api.get("/api/v1/stocks/"))) == 5


# --- stocks: writing (operators) ------------------------------------------------------------


def test_operator_creates_updates_and_deletes_a_stock(operator, api_client_for):
    api = api_client_for(operator)
    created = api.post(
        "/api/v1/stocks/",
        {"symbol": "000660", "name": "SK hynix", "market": "KOSPI", "market_cap": 10**14},
        format="json",
    )
    assert created.status_code == 201, created.data
    assert Stock.objects.get(pk="000660").market_cap == 10**14

    patched = api.patch("/api/v1/stocks/000660/", {"sector": "Memory"}, format="json")
    assert patched.status_code == 200
    stock = Stock.objects.get(pk="000660")
    assert (stock.name, stock.sector, stock.market_cap) == ("SK hynix", "Memory", 10**14)

    # PUT replaces: what is left out returns to its default.
    put = api.put(
        "/api/v1/stocks/000660/", {"name": "SK Hynix Inc.", "market": "KOSPI"}, format="json"
    )
    assert put.status_code == 200, put.data
    stock.refresh_from_db()
    assert (stock.name, stock.sector, stock.market_cap) == ("SK Hynix Inc.", "", None)

    assert api.delete("/api/v1/stocks/000660/").status_code == 204
    assert not Stock.objects.filter(pk="000660").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"symbol": "5930", "name": "x", "market": "KOSPI"}, "symbol"),
        ({"symbol": "abcdef", "name": "x", "market": "KOSPI"}, "symbol"),
        ({"symbol": "005930", "name": "x", "market": "KOSPI"}, "symbol"),  # exists
        ({"symbol": "000660", "market": "KOSPI"}, "name"),
        ({"symbol": "000660", "name": "x", "market": "NYSE"}, "market"),
        ({"symbol": "000660", "name": "x", "market": "KOSPI", "market_cap": -1}, "market_cap"),
        ({"symbol": "000660", "name": "x", "market": "KOSPI", "market_cap": "lots"}, "market_cap"),
        ({"symbol": "000660", "name": "x", "market": "KOSPI", "updated_at": "now"}, "updated_at"),
    ],
)
def test_bad_stock_is_a_field_error(payload, field, stocks, operator, api_client_for):
    response = api_client_for(operator).post("/api/v1/stocks/", payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert Stock.objects.count() == 5


def test_a_stock_symbol_is_never_changed(stocks, operator, api_client_for):
    response = api_client_for(operator).patch(
        "/api/v1/stocks/005930/", {"symbol": "000001"}, format="json"
    )
    assert response.status_code == 400
    assert "symbol" in response.data
    assert not Stock.objects.filter(pk="000001").exists()


def test_a_stock_with_trades_is_not_deleted(stocks, operator, api_client_for):
    make_trade(Stock.objects.get(pk="005930"))
    response = api_client_for(operator).delete("/api/v1/stocks/005930/")
    assert response.status_code == 409
    assert response.data["code"] == "protected"
    assert "005930" in response.data["detail"]
    assert Stock.objects.filter(pk="005930").exists()


# --- market data: reading -------------------------------------------------------------------


@pytest.fixture
def candles(db):
    """Two symbols x two intervals, ten 1m candles each from T0 and three 1d candles."""
    for symbol in ("005930", "000660"):
        for i in range(10):
            make_candle(symbol, "1m", T0 + minutes(i), close=str(70000 + i))
        for day in range(3):
            make_candle(symbol, "1d", T0 + minutes(day * 1440), close="71000")


def _times(rows):
    return [(row["symbol"], row["interval"], row["time"]) for row in rows]


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({}, 26),
        ({"symbol": "005930"}, 13),
        ({"interval": "1d"}, 6),
        ({"symbol": "005930", "interval": "1m"}, 10),
        ({"symbol": "005930", "interval": "1m", "time_after": "2024-05-02T09:05:00+09:00"}, 5),
        ({"symbol": "005930", "interval": "1m", "time_before": "2024-05-02T00:05:00Z"}, 5),
        (
            {
                "symbol": "005930",
                "interval": "1m",
                "time_after": "2024-05-02T00:02:00Z",
                "time_before": "2024-05-02T00:04:00Z",
            },
            2,
        ),
        ({"symbol": "035720"}, 0),
    ],
)
def test_market_data_filters(params, count, candles, client_user, api_client_for):
    response = api_client_for(client_user).get("/api/v1/market-data/", params)
    assert response.status_code == 200, response.data
    rows = response.data["results"]
    assert len(rows) == count
    times = [row["time"] for row in rows]
    assert times == sorted(times, reverse=True)


def test_candle_fields_are_decimal_strings_and_utc_times(candles, trader, api_client_for):
    row = (
        api_client_for(trader)
        .get("/api/v1/market-data/", {"symbol": "005930", "interval": "1m", "page_size": 1})
        .data["results"][0]
    )
    assert row == {
        "symbol": "005930",
        "interval": "1m",
        "time": "2024-05-02T09:09:00+09:00",  # shown in TIME_ZONE (Seoul), with its offset
        "open": "70009.00",
        "high": "70109.00",
        "low": "69909.00",
        "close": "70009.00",
        "volume": 100,
    }


@pytest.mark.parametrize("page_size", [1, 3, 7, 26, 100])
def test_cursor_walks_every_candle_once(page_size, candles, client_user, api_client_for):
    rows = walk(api_client_for(client_user), f"/api/v1/market-data/?page_size={page_size}")
    keys = _times(rows)
    assert len(keys) == len(set(keys)) == 26
    stored = MarketData.objects.values_list("symbol", "interval", "time")
    assert set(keys) == {(s, i, timezone.localtime(t).isoformat()) for s, i, t in stored}
    # Newest first; within one instant by symbol, then interval.
    order = [(row["time"], row["symbol"], row["interval"]) for row in rows]
    assert order == sorted(
        order, key=lambda k: (-datetime.fromisoformat(k[0]).timestamp(), k[1], k[2])
    )


def test_cursor_is_exact_when_many_series_share_a_timestamp(db, client_user, api_client_for):
    """1,200 daily candles at one instant: more ties than DRF's cursor offset cap (1,000)."""
    symbols = [f"{n:06d}" for n in range(1200)]
    MarketData.objects.bulk_create(
        MarketData(symbol=s, interval="1d", time=T0, open=1, high=1, low=1, close=1, volume=0)
        for s in symbols
    )
    rows = walk(api_client_for(client_user), "/api/v1/market-data/?page_size=500")
    assert [row["symbol"] for row in rows] == symbols


def test_previous_link_goes_back_to_the_same_page(candles, client_user, api_client_for):
    api = api_client_for(client_user)
    first = api.get("/api/v1/market-data/", {"page_size": 4})
    assert first.data["previous"] is None
    second = api.get(first.data["next"])
    back = api.get(second.data["previous"])
    assert back.status_code == 200
    assert back.data["results"] == first.data["results"]
    third = api.get(second.data["next"])
    assert api.get(third.data["previous"]).data["results"] == second.data["results"]


def test_cursor_with_a_filter_keeps_the_filter(candles, client_user, api_client_for):
    rows = walk(api_client_for(client_user), "/api/v1/market-data/?symbol=000660&page_size=4")
    assert len(rows) == 13
    assert {row["symbol"] for row in rows} == {"000660"}


def test_market_data_list_queries_are_pinned(
    candles, client_user, django_assert_num_queries, api_client_for
):
    api = api_client_for(client_user)
    # token + user + the client's groups (role) in one, the page. No COUNT.
    with django_assert_num_queries(2):
        response = api.get("/api/v1/market-data/", {"symbol": "005930", "interval": "1m"})
    assert len(response.data["results"]) == 10


# --- market data: writing a candle (operators) ----------------------------------------------


def test_operator_posts_a_candle_then_corrects_it(operator, api_client_for):
    api = api_client_for(operator)
    created = api.post("/api/v1/market-data/", CANDLE, format="json")
    assert created.status_code == 201, created.data
    candle = MarketData.objects.get()
    assert candle.time == datetime(2024, 5, 2, 0, 5, tzinfo=UTC)
    assert candle.close == Decimal("70200")

    corrected = api.post(
        "/api/v1/market-data/", {**CANDLE, "close": "70100", "volume": 1300}, format="json"
    )
    assert corrected.status_code == 200, corrected.data
    candle = MarketData.objects.get()  # still one row: an upsert on (symbol, interval, time)
    assert (candle.close, candle.volume) == (Decimal("70100"), 1300)
    assert corrected.data["close"] == "70100.00"


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        ({"high": "69000"}, "high", "below low"),
        ({"high": "70100"}, "high", "below close"),
        ({"low": "70100"}, "low", "above open"),
        ({"open": "0"}, "open", "greater than 0"),
        ({"low": "-5"}, "low", "greater than 0"),
        ({"close": "abc"}, "close", "valid number"),
        ({"close": "70000.123"}, "close", "decimal places"),
        ({"volume": -1}, "volume", "greater than or equal to 0"),
        ({"volume": "many"}, "volume", "valid integer"),
        ({"symbol": "5930"}, "symbol", "six digits"),
        ({"symbol": "samsun"}, "symbol", "six digits"),
        ({"interval": "2m"}, "interval", "not a valid choice"),
        ({"time": "2024-05-02T09:05:00"}, "time", "timezone"),
        ({"time": "yesterday"}, "time", "ISO 8601"),
        ({"time": None}, "time", "null"),
        ({"extra": 1}, "extra", "cannot be written"),
    ],
)
def test_bad_candle_is_a_field_error(changes, field, says, operator, api_client_for):
    response = api_client_for(operator).post(
        "/api/v1/market-data/", {**CANDLE, **changes}, format="json"
    )
    assert response.status_code == 400
    assert says in " ".join(str(message) for message in response.data[field])
    assert not MarketData.objects.exists()


def test_missing_candle_fields_are_each_named(operator, api_client_for):
    response = api_client_for(operator).post("/api/v1/market-data/", {}, format="json")
    assert response.status_code == 400
    assert set(response.data) == set(CANDLE)
