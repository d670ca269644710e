"""manage.py seed_demo: groups, the demo operator (secrets printed once), the demo symbols."""

import re
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from marketdata.models import Market, Stock
from qbsite.management.commands.seed_demo import (
    DEMO_STOCKS,
    DEMO_STRATEGIES,
    OPERATOR_USERNAME,
)
from qbsite.roles import CLIENT_GROUP, TRADER_GROUP, Role, role_of
from trading.models import Account, Strategy
from trading.strategies import validate_parameters

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_first_run_creates_groups_operator_token_and_symbols(client):
    output = seed()

    assert set(Group.objects.values_list("name", flat=True)) >= {TRADER_GROUP, CLIENT_GROUP}
    operator = User.objects.get(username=OPERATOR_USERNAME)
    assert role_of(operator) is Role.OPERATOR

    password = re.search(r"Password: (\S+)", output).group(1)
    assert operator.check_password(password)
    token = Token.objects.get(user=operator)
    assert token.key in output
    # The printed password opens the admin.
    assert client.login(username=OPERATOR_USERNAME, password=password)
    assert client.get("/admin/").status_code == 200

    assert Stock.objects.count() == len(DEMO_STOCKS) >= 12
    samsung = Stock.objects.get(symbol="005930")
    assert (samsung.name, samsung.market) == ("Samsung Electronics", Market.KOSPI)
    assert samsung.sector
    assert samsung.market_cap is None  # left empty rather than invented
    assert Stock.objects.get(symbol="247540").market == Market.KOSDAQ
    assert Stock.objects.get(symbol="069500").market == Market.ETF


def test_second_run_changes_nothing_and_prints_no_secret():
    first = seed()
    operator = User.objects.get(username=OPERATOR_USERNAME)
    password_hash, token = operator.password, Token.objects.get(user=operator).key
    Stock.objects.filter(symbol="005930").update(sector="Edited by an operator")

    second = seed()

    operator.refresh_from_db()
    assert operator.password == password_hash
    assert Token.objects.get(user=operator).key == token
    assert token in first and token not in second
    assert "Password" not in second
    assert User.objects.filter(username=OPERATOR_USERNAME).count() == 1
    assert Stock.objects.count() == len(DEMO_STOCKS)
    assert Stock.objects.get(symbol="005930").sector == "Edited by an operator"
    assert "0 created" in second


def test_a_missing_token_is_made_and_printed_once_without_touching_the_password():
    seed()
    operator = User.objects.get(username=OPERATOR_USERNAME)
    password_hash = operator.password
    Token.objects.filter(user=operator).delete()

    output = seed()

    new_token = Token.objects.get(user=operator).key
    assert new_token in output
    assert "Password" not in output
    operator.refresh_from_db()
    assert operator.password == password_hash


def test_symbols_are_valid_krx_codes_and_markets():
    for symbol, name, sector, market in DEMO_STOCKS:
        assert re.fullmatch(r"\d{6}", symbol), symbol
        assert name and sector
        assert market in Market.values


def test_demo_strategies_and_the_paper_account_are_made_once_and_edits_stay():
    output = seed()
    assert "demo-mean5" in output
    assert Account.objects.get(broker="paper").cash == Account.objects.get().initial_cash > 0
    strategies = {s.name: s for s in Strategy.objects.all()}
    assert set(strategies) == {name for name, *_ in DEMO_STRATEGIES}
    for strategy in strategies.values():
        assert strategy.enabled and strategy.symbols and strategy.interval == "1m"
        # Stored as the class's validation returns them: every declared parameter, defaults in.
        assert strategy.parameters == validate_parameters(strategy.kind, strategy.parameters)
        assert set(strategy.symbols) <= set(Stock.objects.values_list("symbol", flat=True))

    Strategy.objects.filter(name="demo-sma").update(enabled=False)
    second = seed()
    assert "Demo strategies created" not in second
    assert Strategy.objects.count() == len(DEMO_STRATEGIES)
    assert not Strategy.objects.get(name="demo-sma").enabled
