"""/api/v1/strategies/ and /api/v1/signals/: who may do what, validation, filters, paging.

Routes: StrategyViewSet and SignalViewSet registered in qbsite/api_urls.py with basenames
"strategy" and "signal".
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from marketdata.services import stock_upsert
from qbsite.tests.api_factories import walk
from trading.models import Signal, Strategy
from trading.strategies.services import signal_record, strategy_create, strategy_disable

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def stocks(db):
    stock_upsert(symbol="005930", name="Samsung Electronics", market="KOSPI")
    stock_upsert(symbol="000660", name="SK hynix", market="KOSPI")


def make(name="sma", kind="sma_crossover", **kwargs):
    kwargs.setdefault("symbols", ["005930"])
    kwargs.setdefault("capital_allocation", Decimal("5000000"))
    return strategy_create(name=name, kind=kind, **kwargs)


def body(**changes):
    data = {
        "name": "sma",
        "kind": "sma_crossover",
        "parameters": {"fast": 3},
        "symbols": ["005930"],
        "interval": "1m",
        "enabled": True,
        "capital_allocation": "5000000",
    }
    data.update(changes)
    return data


def detail(strategy):
    return reverse("strategy-detail", args=[strategy.pk])


# --- who may do what -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [
        ("operator", 200, 201),
        ("trader", 200, 403),
        ("client", 200, 403),
        ("stranger", 403, 403),
        (None, 401, 401),
    ],
)
def test_strategies_operators_write_traders_and_clients_read(
    stocks, personas, api_client_for, persona, read, write
):
    api = api_client_for(personas[persona] if persona else None)
    make("existing")
    assert api.get(reverse("strategy-list")).status_code == read
    assert api.get(reverse("strategy-kinds")).status_code == read
    assert api.post(reverse("strategy-list"), body(), format="json").status_code == write
    existing = Strategy.objects.get(name="existing")
    change = api.patch(detail(existing), {"enabled": True}, format="json").status_code
    assert change == (200 if write == 201 else write)
    assert api.delete(detail(existing)).status_code == (204 if write == 201 else write)


@pytest.mark.parametrize(
    ("persona", "status"),
    [("operator", 200), ("trader", 200), ("client", 200), ("stranger", 403), (None, 401)],
)
def test_signals_are_read_only_for_every_role(stocks, personas, api_client_for, persona, status):
    api = api_client_for(personas[persona] if persona else None)
    s = make()
    signal, _ = signal_record(
        strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=Decimal(70000)
    )
    assert api.get(reverse("signal-list")).status_code == status
    assert api.get(reverse("signal-detail", args=[signal.pk])).status_code == status
    refused = {"operator": 405, "trader": 403, "client": 403, "stranger": 403, None: 401}[persona]
    assert api.post(reverse("signal-list"), {}, format="json").status_code == refused
    assert api.delete(reverse("signal-detail", args=[signal.pk])).status_code == refused


# --- strategies ------------------------------------------------------------------------------


def test_create_returns_the_stored_parameters(stocks, operator, api_client_for):
    response = api_client_for(operator).post(reverse("strategy-list"), body(), format="json")
    assert response.status_code == 201, response.data
    assert response.data["parameters"] == {"fast": 3, "slow": 20}
    assert response.data["disabled_reason"] == ""
    assert response.data["capital_allocation"] == "5000000.0000"
    assert Strategy.objects.get().parameters == {"fast": 3, "slow": 20}


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        (
            {"parameters": {"fast": "3"}},
            "strategy_parameters",
            "Invalid parameters for sma_crossover: fast: must be a whole number, got '3'",
        ),
        (
            {"parameters": {"fast": 3, "lag": 1}},
            "strategy_parameters",
            "lag: unknown parameter (parameters of sma_crossover: fast, slow)",
        ),
        ({"kind": "momentum"}, "strategy_kind", "Unknown strategy kind 'momentum'"),
        ({"symbols": ["123456"]}, "strategy_invalid", "Unknown symbol 123456"),
        ({"interval": "2m"}, "strategy_invalid", "interval '2m' is not one of"),
    ],
)
def test_create_refuses_bad_input_with_the_reason(
    stocks, operator, api_client_for, changes, code, message
):
    response = api_client_for(operator).post(
        reverse("strategy-list"), body(**changes), format="json"
    )
    assert response.status_code == 400
    assert response.data["code"] == code
    assert message in response.data["detail"]
    assert not Strategy.objects.exists()


def test_bad_parameters_are_listed_in_the_details(stocks, operator, api_client_for):
    response = api_client_for(operator).post(
        reverse("strategy-list"), body(parameters={"fast": 0, "slow": "x"}), format="json"
    )
    assert response.data["details"]["parameters"] == {
        "fast": "must be at least 1, got 0",
        "slow": "must be a whole number, got 'x'",
    }


def test_model_validation_errors_are_400_on_the_field(stocks, operator, api_client_for):
    api = api_client_for(operator)
    make()
    response = api.post(reverse("strategy-list"), body(), format="json")
    assert response.status_code == 400 and "name" in response.data
    response = api.post(
        reverse("strategy-list"), body(name="zero", capital_allocation="0"), format="json"
    )
    assert response.status_code == 400


def test_patch_validates_and_enabling_clears_the_reason(stocks, operator, api_client_for):
    api = api_client_for(operator)
    s = make(enabled=True)
    strategy_disable(strategy=s, reason="on_candle raised: boom")
    response = api.patch(detail(s), {"parameters": {"slow": 1}}, format="json")
    assert response.status_code == 400
    assert "slow: must be at least 2, got 1" in response.data["detail"]
    response = api.patch(detail(s), {"enabled": True, "disabled_reason": "x"}, format="json")
    assert response.status_code == 200, response.data
    assert (response.data["enabled"], response.data["disabled_reason"]) == (True, "")
    s.refresh_from_db()
    assert s.enabled and s.disabled_reason == ""


def test_a_strategy_with_signals_is_not_deleted(stocks, operator, api_client_for):
    s = make()
    signal_record(
        strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=Decimal(70000)
    )
    response = api_client_for(operator).delete(detail(s))
    assert response.status_code == 409
    assert "disable it instead" in response.data["detail"]


def test_strategies_filter_by_kind_and_enabled(stocks, client_user, api_client_for):
    make("a", enabled=True)
    make("b", kind="rsi_reversion")
    api = api_client_for(client_user)
    names = lambda params: [  # noqa: E731
        row["name"] for row in api.get(reverse("strategy-list"), params).data["results"]
    ]
    assert names({}) == ["a", "b"]
    assert names({"kind": "rsi_reversion"}) == ["b"]
    assert names({"enabled": "true"}) == ["a"]
    assert api.get(reverse("strategy-list"), {"enabled": "maybe"}).status_code == 400


def test_kinds_lists_each_class_with_its_parameters(trader, api_client_for):
    response = api_client_for(trader).get(reverse("strategy-kinds"))
    assert response.status_code == 200
    kinds = {row["kind"]: row for row in response.data}
    assert set(kinds) == {"macd_crossover", "rsi_reversion", "sample_mean5", "sma_crossover"}
    assert kinds["sample_mean5"]["intervals"] == ["1m"]
    assert kinds["sma_crossover"]["intervals"] == ["1m", "5m", "15m", "1h", "1d"]
    assert kinds["sample_mean5"]["parameters"] == [
        {
            "name": "window",
            "type": "int",
            "default": 5,
            "min": 2,
            "max": 100,
            "choices": [],
            "help": "Closes averaged (the current one included).",
        },
        {
            "name": "liquidate_at",
            "type": "time",
            "default": "15:20",
            "min": "09:00",
            "max": "15:30",
            "choices": [],
            "help": "Seoul time from which it only sells (candles ending then or later).",
        },
    ]


# --- signals ---------------------------------------------------------------------------------


@pytest.fixture
def signals(stocks):
    sma, rsi = make("sma"), make("rsi", kind="rsi_reversion")
    made = []
    for i, (strategy, symbol, action) in enumerate(
        [
            (sma, "005930", "BUY"),
            (sma, "005930", "SELL"),
            (rsi, "000660", "BUY"),
            (rsi, "005930", "SELL"),
        ]
    ):
        signal, _ = signal_record(
            strategy=strategy,
            symbol=symbol,
            interval="1m",
            time=T0 + dt.timedelta(minutes=i),
            action=action,
            price=Decimal(70000 + i),
            created_at=T0 + dt.timedelta(minutes=i, seconds=1),
        )
        made.append(signal)
    Signal.objects.filter(pk=made[1].pk).update(outcome="ORDERED")
    return made


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3, 2, 1, 0]),
        ({"strategy": "sma"}, [1, 0]),
        ({"symbol": "005930"}, [3, 1, 0]),
        ({"action": "SELL"}, [3, 1]),
        ({"outcome": "ORDERED"}, [1]),
        ({"outcome": "PENDING", "strategy": "rsi"}, [3, 2]),
        ({"created_at_after": "2026-01-05T09:02:00+09:00"}, [3, 2]),
        ({"strategy": "nobody"}, []),
    ],
)
def test_signal_filters(signals, client_user, api_client_for, params, expected):
    response = api_client_for(client_user).get(reverse("signal-list"), params)
    assert response.status_code == 200, response.data
    assert [row["id"] for row in response.data["results"]] == [signals[i].pk for i in expected]


@pytest.mark.parametrize(
    "params",
    [{"action": "HOLD"}, {"outcome": "DONE"}, {"symbol": "5930"}, {"created_at_after": "today"}],
)
def test_bad_signal_filters_are_400(signals, trader, api_client_for, params):
    assert api_client_for(trader).get(reverse("signal-list"), params).status_code == 400


def test_a_signal_as_the_api_shows_it(signals, trader, api_client_for):
    row = api_client_for(trader).get(reverse("signal-detail", args=[signals[0].pk])).data
    assert row == {
        "id": signals[0].pk,
        "strategy": "sma",
        "symbol": "005930",
        "interval": "1m",
        "time": "2026-01-05T09:00:00+09:00",
        "action": "BUY",
        "confidence": "1.000000",
        "price": "70000.00",
        "quantity": None,
        "reason": "",
        "outcome": "PENDING",
        "outcome_reason": "",
        "created_at": "2026-01-05T09:00:01+09:00",
    }


@pytest.mark.parametrize("page_size", [1, 3])
def test_the_signal_cursor_walks_all_once(signals, trader, api_client_for, page_size):
    rows = walk(api_client_for(trader), f"{reverse('signal-list')}?page_size={page_size}")
    assert [row["id"] for row in rows] == [s.pk for s in reversed(signals)]


def test_signal_list_queries_are_pinned(signals, trader, api_client_for, django_assert_num_queries):
    api = api_client_for(trader)
    # token + user + role in one; the page with its strategies joined
    with django_assert_num_queries(2):
        assert len(api.get(reverse("signal-list")).data["results"]) == 4
