"""Strategies and signals in the admin: the form checks parameters against the class."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

import trading.strategies.admin  # noqa: F401 - registers the admins (the lead wires it too)
from marketdata.services import stock_upsert
from trading.models import Signal, Strategy, Trade
from trading.strategies.services import signal_record, strategy_create, strategy_disable

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)
ADD = "admin:trading_strategy_add"
CHANGELIST = "admin:trading_strategy_changelist"


@pytest.fixture
def browser(client, operator):
    stock_upsert(symbol="005930", name="Samsung Electronics", market="KOSPI")
    stock_upsert(symbol="000660", name="SK hynix", market="KOSPI")
    client.force_login(operator)
    return client


def form_data(**changes):
    data = {
        "name": "sma",
        "kind": "sma_crossover",
        "parameters": '{"fast": 3}',
        "symbols": "005930,000660",
        "interval": "1m",
        "enabled": "on",
        "capital_allocation": "10000000",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def errors(response, field):
    assert response.status_code == 200, "the form should come back with errors"
    return response.context["adminform"].form.errors.get(field, [])


def test_both_are_registered():
    assert admin.site.is_registered(Strategy)
    assert admin.site.is_registered(Signal)


def test_the_add_form_creates_with_defaults_filled(browser):
    response = browser.post(reverse(ADD), form_data())
    assert response.status_code == 302, (
        response.context and response.context["adminform"].form.errors
    )
    s = Strategy.objects.get()
    assert s.parameters == {"fast": 3, "slow": 20}
    assert s.symbols == ["005930", "000660"]
    assert s.enabled and s.capital_allocation == Decimal("10000000")


def test_the_add_page_shows_every_kinds_parameters_with_defaults(browser):
    page = browser.get(reverse(ADD)).content.decode()
    assert "<b>sma_crossover</b>: <code>fast</code>: int, default 5, 1 to 100" in page
    assert "<code>liquidate_at</code>: time (HH:MM), default 15:20" in page
    assert 'value="rsi_reversion"' in page  # the kind is a choice of the registered ones


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"parameters": '{"fast": "3"}'}, "parameters", ["fast: must be a whole number, got '3'"]),
        ({"parameters": '{"fast": 0}'}, "parameters", ["fast: must be at least 1, got 0"]),
        (
            {"parameters": '{"fast": 3, "lag": 1}'},
            "parameters",
            ["lag: unknown parameter (parameters of sma_crossover: fast, slow)"],
        ),
        (
            {"parameters": '{"fast": 30}'},
            "parameters",
            ["fast: must be less than slow (20), got 30"],
        ),
        ({"parameters": "[1, 2]"}, "parameters", ["parameters: must be a JSON object, got list"]),
        ({"kind": "momentum"}, "kind", None),
        (
            {"symbols": "005930,123456"},
            "symbols",
            ["Unknown symbol 123456: not in stocks_metadata (load or add the stock first)."],
        ),
        (
            {"kind": "sample_mean5", "parameters": "{}", "interval": "5m"},
            "interval",
            ["sample_mean5 runs on 1m candles only, not 5m."],
        ),
        ({"symbols": ""}, "symbols", ["An enabled strategy needs at least one symbol."]),
    ],
)
def test_the_form_rejects_bad_input_on_its_field(browser, changes, field, expected):
    response = browser.post(reverse(ADD), form_data(**changes))
    got = errors(response, field)
    if expected is None:
        assert got and "Select a valid choice" in got[0]
    else:
        assert got == expected
    assert not Strategy.objects.exists()


def test_the_change_form_validates_and_keeps_a_traded_name(browser):
    s = strategy_create(
        name="sma", kind="sma_crossover", symbols=["005930"], capital_allocation=Decimal(1000)
    )
    url = reverse("admin:trading_strategy_change", args=[s.pk])
    response = browser.post(url, form_data(kind="rsi_reversion"))
    assert errors(response, "parameters") == [
        "fast: unknown parameter (parameters of rsi_reversion: period, oversold, overbought)"
    ]
    response = browser.post(url, form_data(kind="rsi_reversion", parameters='{"period": 9}'))
    assert response.status_code == 302
    s.refresh_from_db()
    assert (s.kind, s.parameters["period"], s.enabled) == ("rsi_reversion", 9, True)

    Trade.objects.create(
        timestamp=T0,
        symbol_id="005930",
        side="BUY",
        quantity=1,
        price=Decimal(70000),
        strategy="sma",
        order_type="MARKET",
    )
    response = browser.post(
        url, form_data(name="renamed", kind="rsi_reversion", parameters='{"period": 9}')
    )
    assert "has trades recorded under its name" in errors(response, "name")[0]
    s.refresh_from_db()
    assert s.name == "sma"


def test_disabled_reason_is_read_only_and_cleared_by_enabling(browser):
    s = strategy_create(
        name="sma",
        kind="sma_crossover",
        symbols=["005930"],
        enabled=True,
        capital_allocation=Decimal(1000),
    )
    strategy_disable(strategy=s, reason="on_candle raised: boom")
    url = reverse("admin:trading_strategy_change", args=[s.pk])
    page = browser.get(url).content.decode()
    assert "on_candle raised: boom" in page
    assert 'name="disabled_reason"' not in page
    browser.post(url, form_data(enabled=None, disabled_reason="forged"))
    s.refresh_from_db()
    assert (s.enabled, s.disabled_reason) == (False, "on_candle raised: boom")

    response = browser.post(
        reverse(CHANGELIST),
        {"action": "enable_strategies", "_selected_action": [s.pk]},
        follow=True,
    )
    assert "Enabled: sma." in response.content.decode()
    s.refresh_from_db()
    assert (s.enabled, s.disabled_reason) == (True, "")


def test_enable_action_reports_the_ones_it_cannot_enable(browser):
    good = strategy_create(
        name="good", kind="sma_crossover", symbols=["005930"], capital_allocation=Decimal(1000)
    )
    empty = strategy_create(name="empty", kind="sma_crossover", capital_allocation=Decimal(1000))
    response = browser.post(
        reverse(CHANGELIST),
        {"action": "enable_strategies", "_selected_action": [good.pk, empty.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Enabled: good." in page
    assert "Not enabled: empty: An enabled strategy needs at least one symbol." in page
    response = browser.post(
        reverse(CHANGELIST),
        {"action": "disable_strategies", "_selected_action": [good.pk]},
        follow=True,
    )
    assert "Disabled: good." in response.content.decode()
    assert not Strategy.objects.get(pk=good.pk).enabled


def test_signals_are_read_only_in_the_admin(browser):
    s = strategy_create(
        name="sma", kind="sma_crossover", symbols=["005930"], capital_allocation=Decimal(1000)
    )
    signal, _ = signal_record(
        strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=Decimal(70000)
    )
    changelist = reverse("admin:trading_signal_changelist")
    response = browser.get(changelist, {"action": "BUY", "created_at__recent": "1h"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [signal]
    response = browser.get(changelist, {"q": "sm"})
    assert list(response.context["cl"].result_list) == [signal]
    assert browser.get(reverse("admin:trading_signal_add")).status_code == 403
    detail = browser.get(reverse("admin:trading_signal_change", args=[signal.pk]))
    assert detail.status_code == 200 and b'name="action"' not in detail.content
    model_admin = admin.site._registry[Signal]
    assert model_admin.show_full_result_count is False


def test_traders_do_not_reach_the_strategy_admin(client, trader):
    client.force_login(trader)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "/login/" in response["Location"]
