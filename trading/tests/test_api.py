"""The ledger endpoints (read-only): trades, positions, strategy performance."""

from datetime import date

import pytest

from qbsite.tests.api_factories import (
    T0,
    make_performance,
    make_position,
    make_stock,
    make_trade,
    minutes,
    walk,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(db):
    samsung, hynix, kakao = make_stock(), make_stock("000660", "SK hynix"), make_stock("035720")
    trades = [
        make_trade(samsung, timestamp=T0, side="BUY", strategy="sma"),
        make_trade(samsung, timestamp=T0, side="SELL", strategy="sma", status="SETTLED"),
        make_trade(hynix, timestamp=T0 + minutes(1), side="BUY", strategy="rsi"),
        make_trade(hynix, timestamp=T0 + minutes(2), side="BUY", strategy=""),
        make_trade(
            kakao, timestamp=T0 + minutes(3), side="SELL", strategy="momentum", status="CANCELED"
        ),
    ]
    make_position(samsung, quantity=10)
    make_position(hynix, quantity=0)
    make_position(kakao, quantity=5)
    return trades


def _ids(response):
    assert response.status_code == 200, response.data
    return [row["id"] for row in response.data["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [4, 3, 2, 1, 0]),  # newest first; equal timestamps by id, descending
        ({"symbol": "005930"}, [1, 0]),
        ({"side": "SELL"}, [4, 1]),
        ({"strategy": "sma"}, [1, 0]),
        ({"strategy": "rsi"}, [2]),
        ({"status": "CANCELED"}, [4]),
        ({"timestamp_after": "2024-05-02T00:01:00Z"}, [4, 3, 2]),
        ({"timestamp_before": "2024-05-02T09:01:00+09:00"}, [1, 0]),
        ({"symbol": "000660", "timestamp_after": "2024-05-02T00:02:00Z"}, [3]),
    ],
)
def test_trade_filters(params, expected, ledger, client_user, api_client_for):
    response = api_client_for(client_user).get("/api/v1/trades/", params)
    assert _ids(response) == [ledger[i].pk for i in expected]


def test_trade_shows_amount_and_money_as_decimal_strings(ledger, trader, api_client_for):
    row = api_client_for(trader).get(f"/api/v1/trades/{ledger[1].pk}/").data
    assert row["symbol"] == "005930"
    assert (row["price"], row["amount"], row["commission"]) == (
        "70000.00",
        "700000.0000",
        "10.5000",
    )
    assert row["profit_loss"] == "1000.0000"


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_trade_cursor_walks_all_without_duplicates(page_size, ledger, trader, api_client_for):
    rows = walk(api_client_for(trader), f"/api/v1/trades/?page_size={page_size}")
    assert [row["id"] for row in rows] == [t.pk for t in reversed(ledger)]


def test_trade_list_queries_are_pinned(ledger, trader, django_assert_num_queries, api_client_for):
    api = api_client_for(trader)
    # token + user + the trader's groups (role) in one, the page; symbols from symbol_id.
    with django_assert_num_queries(2):
        assert len(_ids(api.get("/api/v1/trades/"))) == 5


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["000660", "005930", "035720"]),
        ({"open": "true"}, ["005930", "035720"]),
        ({"open": "false"}, ["000660"]),
        ({"symbol": "035720"}, ["035720"]),
        ({"ordering": "-quantity"}, ["005930", "035720", "000660"]),
    ],
)
def test_position_filters(params, expected, ledger, client_user, api_client_for):
    response = api_client_for(client_user).get("/api/v1/positions/", params)
    assert [row["symbol"] for row in response.data["results"]] == expected


def test_position_by_symbol(ledger, client_user, api_client_for):
    api = api_client_for(client_user)
    row = api.get("/api/v1/positions/005930/").data
    assert (row["quantity"], row["market_value"]) == (10, "710000.0000")
    assert api.get("/api/v1/positions/999999/").status_code == 404


def test_position_list_queries_are_pinned(
    ledger, operator, django_assert_num_queries, api_client_for
):
    api = api_client_for(operator)
    # token + user (staff: no group lookup), COUNT, the page.
    with django_assert_num_queries(3):
        assert api.get("/api/v1/positions/").status_code == 200


@pytest.fixture
def performance(db):
    return [
        make_performance("sma", date(2024, 5, 2)),
        make_performance("rsi", date(2024, 5, 2)),
        make_performance("sma", date(2024, 5, 3)),
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [("sma", "2024-05-03"), ("rsi", "2024-05-02"), ("sma", "2024-05-02")]),
        ({"strategy": "sma"}, [("sma", "2024-05-03"), ("sma", "2024-05-02")]),
        ({"date_after": "2024-05-03"}, [("sma", "2024-05-03")]),
        ({"date_before": "2024-05-02"}, [("rsi", "2024-05-02"), ("sma", "2024-05-02")]),
    ],
)
def test_strategy_performance_filters(params, expected, performance, trader, api_client_for):
    response = api_client_for(trader).get("/api/v1/strategy-performance/", params)
    assert response.status_code == 200, response.data
    assert [(row["strategy"], row["date"]) for row in response.data["results"]] == expected
