"""market_data in the admin: rows named by their (symbol, interval, time) key."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from marketdata.admin import market_data_key, parse_market_data_key
from marketdata.models import MarketData, MarketDataRow, Stock

CHANGELIST = reverse("admin:marketdata_marketdatarow_changelist")
T0 = datetime.datetime(2025, 1, 2, 0, 0, tzinfo=datetime.UTC)  # 09:00 in Seoul, the open


def _candle(symbol: str, interval: str, time: datetime.datetime) -> MarketData:
    return MarketData.objects.create(
        symbol=symbol,
        interval=interval,
        time=time,
        open=Decimal(100),
        high=Decimal(110),
        low=Decimal(90),
        close=Decimal(105),
        volume=7,
    )


def _change_url(key: str) -> str:
    return reverse("admin:marketdata_marketdatarow_change", args=[key])


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def candles(db):
    Stock.objects.create(symbol="005930", name="Samsung Electronics", market="KOSPI")
    Stock.objects.create(symbol="000660", name="SK hynix", market="KOSPI")
    # Same time, different symbol or interval: `time` alone names none of them.
    _candle("005930", "1m", T0)
    _candle("005930", "5m", T0)
    _candle("000660", "1m", T0)
    _candle("005930", "1m", T0 + datetime.timedelta(minutes=1, microseconds=250))


@pytest.fixture
def operator_browser(client, operator):
    client.force_login(operator)
    return client


def test_composite_primary_key_model_is_not_registered_but_its_table_is():
    assert not admin.site.is_registered(MarketData)
    assert admin.site.is_registered(MarketDataRow)
    assert MarketDataRow._meta.db_table == MarketData._meta.db_table
    assert not MarketDataRow._meta.managed


@pytest.mark.parametrize(
    "time",
    [
        T0,
        T0 + datetime.timedelta(microseconds=250),
        T0.astimezone(datetime.timezone(datetime.timedelta(hours=9))),
    ],
)
def test_key_round_trip(time):
    row = MarketDataRow(symbol="0001A0", interval="1mo", time=time)
    key = market_data_key(row)
    assert key.startswith("0001A0.1mo.20250102T000000")
    assert parse_market_data_key(key) == {"symbol": "0001A0", "interval": "1mo", "time": time}


@pytest.mark.parametrize(
    "key",
    ["", "2025-01-02", "005930.1m", "005930.1m.20250102T000000", "005930.1m.20251302T000000Z"],
)
def test_not_a_key(key):
    assert parse_market_data_key(key) is None


def test_change_page_shows_the_one_row_of_its_key(operator_browser, candles):
    key = "005930.5m.20250102T000000Z"
    assert key in operator_browser.get(CHANGELIST).content.decode()
    response = operator_browser.get(_change_url(key))
    assert response.status_code == 200
    original = response.context["original"]
    assert (original.symbol, original.interval, original.time) == ("005930", "5m", T0)
    history_url = reverse("admin:marketdata_marketdatarow_history", args=[key])
    assert history_url in response.content.decode()
    history = operator_browser.get(history_url)
    assert history.status_code == 200
    assert _change_url(key) in history.content.decode(), "the breadcrumb leads back to the row"


def test_row_with_microseconds(operator_browser, candles):
    key = "005930.1m.20250102T000100.000250Z"
    assert key in operator_browser.get(CHANGELIST).content.decode()
    assert operator_browser.get(_change_url(key)).status_code == 200


@pytest.mark.parametrize("key", ["005930.1m.20250102T000200Z", "nonsense", "1735776000"])
def test_unknown_or_malformed_key_redirects_with_a_message(operator_browser, candles, key):
    response = operator_browser.get(_change_url(key), follow=True)
    assert response.redirect_chain[0][1] == 302
    messages = [str(m) for m in response.context["messages"]]
    assert any("doesn\N{RIGHT SINGLE QUOTATION MARK}t exist" in m for m in messages), messages


def test_search_by_symbol_in_any_case_or_by_name(operator_browser, candles):
    def found(q):
        response = operator_browser.get(CHANGELIST, {"q": q})
        assert response.status_code == 200
        return sorted((r.symbol, r.interval) for r in response.context["cl"].result_list)

    assert found("000660") == [("000660", "1m")]
    assert found("hynix") == [("000660", "1m")]
    assert found("samsung") == [("005930", "1m"), ("005930", "1m"), ("005930", "5m")]
    assert found("0059") == [], "a partial symbol is a name search, not a slow LIKE on the table"


def test_market_data_is_view_only(operator_browser, candles):
    key = "005930.1m.20250102T000000Z"
    assert operator_browser.post(_change_url(key), {"close": "1"}).status_code == 403
    delete = reverse("admin:marketdata_marketdatarow_delete", args=[key])
    assert operator_browser.post(delete, {"post": "yes"}).status_code == 403
    assert MarketData.objects.filter(symbol="005930", interval="1m", time=T0, close=105).exists()
