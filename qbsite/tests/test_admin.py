"""The admin as a whole: who gets in, and every registered model's pages for every persona.

Parametrized from the admin registry, so a model registered later is tested without anyone
remembering to add it, and a QB model that is not registered fails
`test_every_qb_model_is_in_the_admin`.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token, TokenProxy

from conftest import PASSWORD
from marketdata.admin import market_data_key
from marketdata.models import MarketData, MarketDataRow, Stock
from ops.models import SystemLog
from qbsite.roles import TRADER_GROUP
from risk import services as risk_services
from risk.models import (
    LimitChange,
    RiskAlert,
    RiskLimits,
    RiskLock,
    RiskMetric,
    TradingState,
    TradingStateChange,
)
from trading.models import (
    Account,
    BrokerSync,
    Order,
    OrderTransition,
    Position,
    Signal,
    Strategy,
    StrategyPerformance,
    Trade,
)
from trading.services import account_ensure, order_create

REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)
QB_APPS = ("marketdata", "trading", "risk", "ops")

# Adding makes no sense for these (engine output, ledger, audit trail, roles), or is kept to
# superusers (groups). Every registered model must be in one of the two sets.
OPERATOR_ADDS = {Stock, Position, Strategy, Account, User, TokenProxy, RiskLock}
OPERATOR_CANNOT_ADD = {
    RiskLimits,  # one row, edited
    TradingState,  # one row, changed with the dashboard's control
    LimitChange,
    TradingStateChange,
    RiskAlert,
    BrokerSync,
    MarketDataRow,
    Trade,
    Signal,
    Order,
    OrderTransition,
    StrategyPerformance,
    RiskMetric,
    SystemLog,
    Group,
}

NOT_OPERATORS = ("trader", "client", "stranger", "anonymous")
# Models of one row whose change list redirects to that row's page.
SINGLE_ROW_REDIRECTS = {RiskLimits}


def _label(model) -> str:
    return model._meta.label


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """The personas' passwords are hashed per test; the real hasher takes about a second."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def objects(db, trader):
    """One object of every registered model, and the id the admin names it by in URLs."""
    now = timezone.now()
    stock = Stock.objects.create(symbol="005930", name="Samsung Electronics", market="KOSPI")
    MarketData.objects.create(
        symbol="005930",
        interval="1m",
        time=now.replace(second=0, microsecond=0),
        open=Decimal("70000"),
        high=Decimal("70500"),
        low=Decimal("69900"),
        close=Decimal("70400"),
        volume=1200,
    )
    row = MarketDataRow.objects.get()
    trade = Trade.objects.create(
        timestamp=now,
        symbol=stock,
        side="SELL",
        quantity=10,
        price=Decimal("70400"),
        commission=Decimal("105.6"),
        tax=Decimal("1267.2"),
        order_type="LIMIT",
        profit_loss=Decimal("2627.2"),
    )
    position = Position.objects.create(
        symbol=stock, quantity=5, average_price=Decimal("70000"), current_price=Decimal("70400")
    )
    performance = StrategyPerformance.objects.create(
        strategy="sma_cross", date=now.date(), total_return=Decimal("0.0123"), trades_count=1
    )
    metric = RiskMetric.objects.create(timestamp=now, portfolio_value=Decimal("100000000"))
    strategy = Strategy.objects.create(
        name="sma-cross", kind="sma_crossover", capital_allocation=Decimal("1000000")
    )
    signal = Signal.objects.create(
        strategy=strategy, symbol=stock, interval="1m", time=now, action="BUY",
        price=Decimal("70400"),
    )  # fmt: skip
    order, _ = order_create(
        client_order_id="adm-1", symbol="005930", side="BUY", order_type="MARKET", quantity=1,
        actor="test",
    )  # fmt: skip
    account = account_ensure(broker="paper")
    log = SystemLog.objects.create(
        timestamp=now, level="ERROR", component="qb.collector", message="feed lost"
    )
    Token.objects.create(user=trader)
    token = TokenProxy.objects.get(user=trader)
    group = Group.objects.get(name=TRADER_GROUP)
    risk_services.limits_update(actor="test", reason="admin test", max_trades_per_day=21)
    state_change = TradingStateChange.objects.create(
        from_state="ACTIVE", to_state="HALTED", actor="test", reason="admin test", at=now
    )
    lock = risk_services.lock_create(
        kind="MANUAL", until=now + datetime.timedelta(hours=1), reason="test", actor="test",
        symbol="005930",
    )  # fmt: skip
    alert = RiskAlert.objects.create(
        alert_type="DAILY_LOSS", severity="CRITICAL", message="test", created_at=now
    )
    sync = BrokerSync.objects.create(broker="kis", status="AGREED", checked_at=now)
    return {
        RiskLimits: (RiskLimits.objects.get(), RiskLimits.objects.get().pk),
        LimitChange: (LimitChange.objects.get(), LimitChange.objects.get().pk),
        TradingState: (TradingState.objects.get(), TradingState.objects.get().pk),
        TradingStateChange: (state_change, state_change.pk),
        RiskLock: (lock, lock.pk),
        RiskAlert: (alert, alert.pk),
        BrokerSync: (sync, sync.pk),
        Stock: (stock, stock.pk),
        MarketDataRow: (row, market_data_key(row)),
        Trade: (trade, trade.pk),
        Position: (position, position.pk),
        StrategyPerformance: (performance, performance.pk),
        RiskMetric: (metric, metric.pk),
        Strategy: (strategy, strategy.pk),
        Signal: (signal, signal.pk),
        Order: (order, order.pk),
        OrderTransition: (order.transitions.get(), order.transitions.get().pk),
        Account: (account, account.pk),
        SystemLog: (log, log.pk),
        User: (trader, trader.pk),
        Group: (group, group.pk),
        TokenProxy: (token, trader.pk),  # DRF's token admin names a token by its user's id
    }


@pytest.fixture
def browser_for(client, personas):
    """browser_for(name): the test client logged in as that persona ("anonymous": nobody)."""

    def make(name):
        if name != "anonymous":
            client.force_login(personas[name])
        return client

    return make


def test_every_qb_model_is_in_the_admin():
    tables = {model._meta.db_table for model in REGISTERED}
    for app_label in QB_APPS:
        for model in apps.get_app_config(app_label).get_models():
            if model._meta.is_composite_pk:
                # The admin cannot register it; an unmanaged stand-in over its table must be.
                assert model._meta.db_table in tables, _label(model)
            else:
                assert model in admin.site._registry, f"{_label(model)} is not in the admin"


def test_every_registered_model_has_an_add_policy():
    assert set(REGISTERED) == OPERATOR_ADDS | OPERATOR_CANNOT_ADD
    assert not OPERATOR_ADDS & OPERATOR_CANNOT_ADD


def test_index_for_operator_lists_every_model(browser_for, objects):
    response = browser_for("operator").get(reverse("admin:index"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "QB back office" in html
    assert "<title>Operations | QB</title>" in html
    assert "KIS virtual" in html, "the KIS account kind is in the header"
    for model in REGISTERED:
        assert _url(model, "changelist") in html, _label(model)


@pytest.mark.parametrize("name", NOT_OPERATORS)
def test_index_redirects_others_to_login(browser_for, name):
    response = browser_for(name).get(reverse("admin:index"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


@pytest.mark.parametrize("model", REGISTERED, ids=_label)
def test_operator_gets_changelist_and_change_page(browser_for, objects, model):
    browser = browser_for("operator")
    obj, object_id = objects[model]
    changelist = browser.get(_url(model, "changelist"))
    change_url = _url(model, "change", quote(object_id))
    if model in SINGLE_ROW_REDIRECTS:
        # The one row's list is that row: the list goes straight to its page.
        assert (changelist.status_code, changelist.url) == (302, change_url)
    else:
        assert changelist.status_code == 200
        assert change_url in changelist.content.decode(), "the list links to the object"
    change = browser.get(change_url)
    assert change.status_code == 200
    assert change.context["original"] == obj or str(obj) in change.content.decode()


@pytest.mark.parametrize("model", REGISTERED, ids=_label)
def test_operator_add_page_where_adding_is_allowed(browser_for, objects, model):
    browser = browser_for("operator")
    response = browser.get(_url(model, "add"))
    if model in OPERATOR_ADDS:
        assert response.status_code == 200
        assert _url(model, "add") in browser.get(_url(model, "changelist")).content.decode()
    else:
        assert response.status_code == 403
        assert _url(model, "add") not in browser.get(_url(model, "changelist")).content.decode()


@pytest.mark.parametrize("name", NOT_OPERATORS)
@pytest.mark.parametrize("model", REGISTERED, ids=_label)
def test_others_are_sent_to_login(browser_for, objects, model, name):
    _, object_id = objects[model]
    browser = browser_for(name)
    for url in (
        _url(model, "changelist"),
        _url(model, "add"),
        _url(model, "change", quote(object_id)),
        _url(model, "history", quote(object_id)),
    ):
        response = browser.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("admin:login")), url


# A term each searchable model's fixture object answers to.
SEARCH_TERMS = {
    Stock: "samsung",
    MarketDataRow: "005930",
    Trade: "0059",
    Position: "0059",
    StrategyPerformance: "sma",
    Strategy: "sma",
    Signal: "0059",
    Order: "0059",
    OrderTransition: "adm-1",
    SystemLog: "qb.coll",
    User: "tom",
    Group: "trad",
    TokenProxy: "tom",
    RiskAlert: "DAILY_LOSS",
}


def test_every_searchable_model_has_a_search_term():
    searchable = {m for m in REGISTERED if admin.site._registry[m].search_fields}
    assert searchable == set(SEARCH_TERMS)


@pytest.mark.parametrize("model", SEARCH_TERMS, ids=_label)
def test_changelist_search(browser_for, objects, model):
    browser = browser_for("operator")
    obj, _ = objects[model]
    found = browser.get(_url(model, "changelist"), {"q": SEARCH_TERMS[model]})
    assert found.status_code == 200
    assert obj.pk in [result.pk for result in found.context["cl"].result_list]
    missed = browser.get(_url(model, "changelist"), {"q": "zz-no-match-zz"})
    assert missed.status_code == 200
    assert missed.context["cl"].result_count == 0


@pytest.mark.parametrize(
    "model", [m for m in REGISTERED if admin.site._registry[m].list_filter], ids=_label
)
def test_changelist_every_filter_choice(browser_for, objects, model):
    """Follow every choice of every filter the page offers: each must render (no ?e=1)."""
    browser = browser_for("operator")
    page = browser.get(_url(model, "changelist"))
    offered = 0
    for spec in page.context["cl"].filter_specs:
        for choice in spec.choices(page.context["cl"]):
            response = browser.get(_url(model, "changelist") + choice["query_string"])
            assert response.status_code == 200, choice["query_string"]
            offered += 1
    assert offered >= 2


def test_operator_login_form(client, operator, trader):
    login = reverse("admin:login")
    denied = client.post(login, {"username": trader.username, "password": PASSWORD})
    assert denied.status_code == 200, "the form is shown again"
    assert "_auth_user_id" not in client.session
    allowed = client.post(login, {"username": operator.username, "password": PASSWORD})
    assert allowed.status_code == 302
    assert client.session["_auth_user_id"] == str(operator.pk)


def test_non_staff_superuser_is_an_operator_in_the_admin_too(client, db):
    """qbsite.roles counts a superuser as an operator; the admin agrees with it."""
    boss = User.objects.create_user("bo-boss", password=PASSWORD, is_superuser=True)
    response = client.post(
        reverse("admin:login"), {"username": boss.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


# --- Users, groups, tokens ------------------------------------------------------------------
def test_operator_adds_a_trader(browser_for, db):
    browser = browser_for("operator")
    response = browser.post(
        _url(User, "add"),
        {"username": "tina-trader", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    tina = User.objects.get(username="tina-trader")
    trader_group = Group.objects.get_or_create(name=TRADER_GROUP)[0]
    response = browser.post(
        _url(User, "change", tina.pk),
        {
            "username": "tina-trader",
            "is_active": "on",
            "groups": [trader_group.pk],
            "is_superuser": "on",  # read-only for operators: ignored
        },
    )
    assert response.status_code == 302
    tina.refresh_from_db()
    assert list(tina.groups.values_list("name", flat=True)) == [TRADER_GROUP]
    assert not tina.is_superuser


def test_operator_cannot_change_a_superuser_or_groups(browser_for, superuser, objects):
    browser = browser_for("operator")
    page = browser.get(_url(User, "change", superuser.pk))
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    response = browser.post(_url(User, "change", superuser.pk), {"username": "renamed"})
    assert response.status_code == 403
    superuser.refresh_from_db()
    assert superuser.username == "sam-super"
    group = Group.objects.get(name=TRADER_GROUP)
    assert browser.post(_url(Group, "change", group.pk), {"name": "x"}).status_code == 403
    assert browser.post(_url(User, "delete", superuser.pk), {"post": "yes"}).status_code == 403


def test_superuser_manages_groups(client, superuser, objects):
    client.force_login(superuser)
    assert client.get(_url(Group, "add")).status_code == 200
    response = client.post(_url(Group, "add"), {"name": "auditors"})
    assert response.status_code == 302
    assert Group.objects.filter(name="auditors").exists()


def test_tokens_masked_in_the_list_shown_on_their_page(browser_for, objects, trader):
    browser = browser_for("operator")
    token = Token.objects.get(user=trader)
    listing = browser.get(_url(TokenProxy, "changelist")).content.decode()
    assert token.key not in listing
    assert f"{token.key[:4]}…" in listing
    page = browser.get(_url(TokenProxy, "change", trader.pk)).content.decode()
    assert token.key in page


def test_operator_issues_and_revokes_a_token(browser_for, client_user):
    browser = browser_for("operator")
    response = browser.post(_url(TokenProxy, "add"), {"user": client_user.pk})
    assert response.status_code == 302
    assert Token.objects.filter(user=client_user).exists()
    response = browser.post(_url(TokenProxy, "delete", client_user.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Token.objects.filter(user=client_user).exists()


def test_position_pnl_is_read_only_and_symbol_autocompletes(browser_for, objects):
    browser = browser_for("operator")
    position, _ = objects[Position]
    response = browser.post(
        _url(Position, "change", position.pk),
        {
            "symbol": "005930",
            "quantity": "7",
            "average_price": "70000",
            "current_price": "70400",
            "unrealized_pnl": "999999",
            "realized_pnl": "999999",
        },
    )
    assert response.status_code == 302
    position.refresh_from_db()
    assert position.quantity == 7
    assert position.realized_pnl == 0 and position.unrealized_pnl == 0
    found = browser.get(
        reverse("admin:autocomplete"),
        {"app_label": "trading", "model_name": "position", "field_name": "symbol", "term": "0059"},
    )
    assert found.status_code == 200
    assert [r["id"] for r in found.json()["results"]] == ["005930"]


def test_trades_are_a_ledger(browser_for, objects):
    browser = browser_for("operator")
    trade, _ = objects[Trade]
    response = browser.post(_url(Trade, "change", trade.pk), {"quantity": "1"})
    assert response.status_code == 403
    assert browser.post(_url(Trade, "delete", trade.pk), {"post": "yes"}).status_code == 403
    trade.refresh_from_db()
    assert trade.quantity == 10


def test_recent_time_filter_rejects_an_unknown_range(browser_for, objects):
    response = browser_for("operator").get(
        _url(SystemLog, "changelist"), {"timestamp__recent": "1y"}
    )
    assert response.status_code == 302
    assert response.url.endswith("?e=1")


def test_recent_time_filter_keeps_only_the_range(browser_for, objects):
    old = SystemLog.objects.create(
        timestamp=timezone.now() - datetime.timedelta(hours=3),
        level="WARNING",
        component="qb.archiver",
        message="slow",
    )
    browser = browser_for("operator")
    last_hour = browser.get(_url(SystemLog, "changelist"), {"timestamp__recent": "1h"})
    # Membership, not the whole list: the log writer's rows of earlier tests (it commits on
    # its own connection) may still be in the table.
    recent = list(last_hour.context["cl"].result_list)
    assert objects[SystemLog][0] in recent
    assert old not in recent
    last_day = browser.get(_url(SystemLog, "changelist"), {"timestamp__recent": "24h"})
    assert old in last_day.context["cl"].result_list
