"""The real-time read endpoints: quotes, candles (Redis + PostgreSQL merged), indicators."""

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from marketdata.keys import candles_key, indicators_key, quote_key
from marketdata.selectors import known_symbols_clear
from marketdata.types import Candle
from qbsite.tests.api_factories import T0, make_candle, make_stock, minutes, walk

pytestmark = pytest.mark.django_db

QUOTE = {
    "timestamp": "2024-05-02T00:05:07Z",
    "open": "70000",
    "high": "70500",
    "low": "69900",
    "close": "70200",
    "volume": "123456",
    "prev_close": "69800",
    "change": "400",
    "change_rate": "0.57",
    "upper_limit": "90700",
    "lower_limit": "48900",
}


@pytest.fixture(autouse=True)
def fresh_symbols(redis_client):
    known_symbols_clear()  # each test has its own stocks_metadata
    yield
    known_symbols_clear()


@pytest.fixture
def samsung(db):
    return make_stock("005930", "Samsung Electronics", "KOSPI")


def _redis_candle(time, close, volume=10, interval="1m"):
    close = Decimal(close)
    return Candle("005930", interval, time, close, close + 100, close - 100, close, volume)


# --- quote ----------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["operator", "trader", "client"])
def test_every_role_reads_the_latest_quote(
    persona, personas, samsung, redis_client, api_client_for
):
    redis_client.hset(quote_key("005930"), mapping=QUOTE)
    response = api_client_for(personas[persona]).get(reverse("quote", args=["005930"]))
    assert response.status_code == 200, response.data
    assert response.json() == {
        "symbol": "005930",
        "timestamp": "2024-05-02T09:05:07+09:00",
        "open": "70000.00",
        "high": "70500.00",
        "low": "69900.00",
        "close": "70200.00",
        "volume": 123456,
        "prev_close": "69800.00",
        "change": "400.00",
        "change_rate": "0.57",
        "upper_limit": "90700.00",
        "lower_limit": "48900.00",
    }


def test_quote_of_a_known_symbol_runs_no_query_beyond_authentication(
    client_user, samsung, redis_client, api_client_for, django_assert_num_queries
):
    redis_client.hset(quote_key("005930"), mapping=QUOTE)
    api = api_client_for(client_user)
    assert api.get(reverse("quote", args=["005930"])).status_code == 200  # warms the caches
    # One query: the token with its user and the user's groups (its role). None for the quote.
    with django_assert_num_queries(1):
        assert api.get(reverse("quote", args=["005930"])).status_code == 200


def test_quote_fields_not_known_yet_are_null(client_user, samsung, redis_client, api_client_for):
    redis_client.hset(quote_key("005930"), mapping={**QUOTE, "prev_close": "", "change": ""})
    data = api_client_for(client_user).get(reverse("quote", args=["005930"])).json()
    assert data["prev_close"] is None
    assert data["change"] is None
    assert data["close"] == "70200.00"


def test_quote_missing_or_unknown_symbol_is_404(client_user, samsung, api_client_for):
    api = api_client_for(client_user)
    response = api.get(reverse("quote", args=["005930"]))
    assert response.status_code == 404
    assert response.json()["detail"].startswith("No quote for 005930 yet")
    response = api.get(reverse("quote", args=["999999"]))
    assert response.status_code == 404
    assert response.json()["detail"] == "Unknown symbol '999999': it is not in stocks_metadata."


def test_a_stock_listed_after_the_cache_was_filled_is_served(
    client_user, samsung, redis_client, api_client_for
):
    api = api_client_for(client_user)
    redis_client.hset(quote_key("000660"), mapping=QUOTE)
    assert api.get(reverse("quote", args=["005930"])).status_code == 404  # fills the cache
    make_stock("000660", "SK hynix", "KOSPI")
    assert api.get(reverse("quote", args=["000660"])).status_code == 200


def test_anonymous_gets_401_and_stranger_403(stranger, samsung, api_client_for):
    for name in ("quote", "indicators"):
        url = reverse(name, args=["005930"])
        assert api_client_for(None).get(url).status_code == 401
        assert api_client_for(stranger).get(url).status_code == 403
    url = reverse("candle-series", args=["005930", "1m"])
    assert api_client_for(None).get(url).status_code == 401
    assert api_client_for(stranger).get(url).status_code == 403


# --- candles ----------------------------------------------------------------------------------


@pytest.fixture
def series(samsung, redis_client):
    """Minutes 0-7 closed in PostgreSQL (archived); 5-9 in Redis, 9 still building.

    5-7 are in both stores, as after the archiver caught up. Minute 9 is the next minute of
    the wall clock, so that its bucket has not ended whenever the test runs. Returns minute 0.
    """
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    base = now - minutes(8)
    for i in range(8):
        make_candle(time=base + minutes(i), close=str(70000 + i * 100))
    redis_rows = [_redis_candle(base + minutes(i), str(70000 + i * 100)) for i in range(5, 10)]
    # newest first, like the collector's list
    redis_client.rpush(candles_key("005930", "1m"), *[c.to_json() for c in reversed(redis_rows)])
    return base


def _times(rows):
    return [dt.datetime.fromisoformat(row["time"]).astimezone(dt.UTC) for row in rows]


def test_candles_merge_redis_and_postgresql_once_each_newest_first(
    client_user, series, api_client_for
):
    api = api_client_for(client_user)
    response = api.get(reverse("candle-series", args=["005930", "1m"]))
    assert response.status_code == 200, response.data
    rows = response.json()["results"]
    assert _times(rows) == [series + minutes(i) for i in range(9, -1, -1)]
    assert [row["closed"] for row in rows] == [False] + [True] * 9  # minute 9 is building
    assert rows[0]["close"] == "70900.00"
    assert rows[-1] == {
        "symbol": "005930",
        "interval": "1m",
        "time": series.astimezone(dt.timezone(dt.timedelta(hours=9))).isoformat(),
        "open": "70000.00",
        "high": "70100.00",
        "low": "69900.00",
        "close": "70000.00",
        "volume": 100,
        "closed": True,
    }
    # Same answer through the query-string form.
    same = api.get(reverse("candles"), {"symbol": "005930", "interval": "1m"})
    assert same.json()["results"] == rows


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 7])
def test_candle_pages_walk_the_merged_series_without_gap_or_repeat(
    page_size, client_user, series, api_client_for
):
    api = api_client_for(client_user)
    url = reverse("candle-series", args=["005930", "1m"]) + f"?page_size={page_size}"
    rows = walk(api, url)
    assert _times(rows) == [series + minutes(i) for i in range(9, -1, -1)]
    # And back: the previous link of the last page leads to the rows before it.
    last = api.get(url)
    while last.json()["next"]:
        last = api.get(last.json()["next"])
    previous = api.get(last.json()["previous"]).json()["results"] if page_size < 10 else []
    if previous:
        first_of_last = _times(last.json()["results"])[0]
        assert _times(previous)[-1] == first_of_last + minutes(1)


def test_candles_time_range(client_user, series, api_client_for):
    api = api_client_for(client_user)
    response = api.get(
        reverse("candle-series", args=["005930", "1m"]),
        {
            "time_after": (series + minutes(3)).isoformat(),
            "time_before": (series + minutes(6)).isoformat(),
        },
    )
    assert _times(response.json()["results"]) == [series + minutes(i) for i in (5, 4, 3)]


def test_recent_candles_from_redis_run_no_query_beyond_authentication(
    client_user, series, api_client_for, django_assert_num_queries
):
    api = api_client_for(client_user)
    url = reverse("candle-series", args=["005930", "1m"])
    api.get(url)
    with django_assert_num_queries(1):  # token + user + role: Redis fills the page
        assert len(api.get(url, {"page_size": 3}).json()["results"]) == 3
    with django_assert_num_queries(2):  # ... and one for the older rows from PostgreSQL
        assert len(api.get(url, {"page_size": 8}).json()["results"]) == 8


def test_candles_from_postgresql_only_when_redis_has_none(client_user, samsung, api_client_for):
    for i in range(3):
        make_candle(interval="5m", time=T0 + minutes(5 * i))
    rows = api_client_for(client_user).get(reverse("candle-series", args=["005930", "5m"]))
    assert _times(rows.json()["results"]) == [T0 + minutes(10), T0 + minutes(5), T0]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "1m"}, "symbol"),
        ({"symbol": "005930"}, "interval"),
        ({"symbol": "005930", "interval": "2m"}, "interval"),
        ({"symbol": "5930", "interval": "1m"}, "symbol"),
        ({"symbol": "005930", "interval": "1m", "time_after": "2024-05-02T09:00"}, "time_after"),
        (
            {
                "symbol": "005930",
                "interval": "1m",
                "time_after": "2024-05-02T09:00Z",
                "time_before": "2024-05-02T09:00Z",
            },
            "time_before",
        ),
        ({"symbol": "005930", "interval": "1m", "cursor": "nonsense"}, "cursor"),
        ({"symbol": "005930", "interval": "1m", "page_size": "0"}, "page_size"),
    ],
)
def test_bad_candle_queries_are_400_naming_the_parameter(
    params, field, client_user, samsung, api_client_for
):
    response = api_client_for(client_user).get(reverse("candles"), params)
    assert response.status_code == 400
    assert field in response.json()


def test_candles_of_an_unknown_symbol_are_404(client_user, samsung, api_client_for):
    response = api_client_for(client_user).get(reverse("candle-series", args=["999999", "1m"]))
    assert response.status_code == 404


# --- indicators -------------------------------------------------------------------------------


def test_indicators(client_user, samsung, redis_client, api_client_for):
    api = api_client_for(client_user)
    url = reverse("indicators", args=["005930"])
    assert api.get(url).status_code == 404
    redis_client.hset(
        indicators_key("005930"),
        mapping={
            "sma_20": "70012.5",
            "rsi": "55.25",
            "macd": "-12.5",
            "macd_signal": "",
            "macd_hist": "",
            "updated_at": "2024-05-02T00:10:00Z",
        },
    )
    assert api.get(url).json() == {
        "symbol": "005930",
        "sma_20": 70012.5,
        "rsi": 55.25,
        "macd": -12.5,
        "macd_signal": None,
        "macd_hist": None,
        "updated_at": "2024-05-02T09:10:00+09:00",
    }
