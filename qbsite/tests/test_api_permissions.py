"""The API permission matrix: every role x every resource x every action, from one table.

Columns are the personas: anonymous, stranger (signed in, no role), client, trader, operator.
404 on market-data's detail actions: that resource has no detail route (composite key).
405 for an operator on the ledger: those endpoints are read-only for everyone.
"""

import datetime as dt

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from marketdata.models import MarketData, Stock
from qbsite.roles import CLIENT_GROUP
from qbsite.tests.api_factories import (
    CANDLE,
    T0,
    make_candle,
    make_log,
    make_performance,
    make_position,
    make_risk_metric,
    make_stock,
    make_trade,
    minutes,
)
from risk import services as risk_services
from risk.models import LimitChange, RiskAlert, RiskLock, TradingStateChange
from trading.models import Order, Signal, Strategy
from trading.services import account_ensure, order_create
from trading.strategies.services import strategy_create

ROLES = ("anonymous", "stranger", "client", "trader", "operator")

READ_ALL = (401, 403, 200, 200, 200)
READ_OPERATOR = (401, 403, 403, 403, 200)
NO_WRITE = (401, 403, 403, 403, 405)  # read-only resource: an operator learns the method's absent
NO_ROUTE = (404, 404, 404, 404, 404)
READ_ONLY = {
    "list": READ_ALL,
    "retrieve": READ_ALL,
    "create": NO_WRITE,
    "update": NO_WRITE,
    "delete": NO_WRITE,
}

# resource: {action: expected statuses per role, in ROLES order}
MATRIX = {
    "stocks": {
        "list": READ_ALL,
        "retrieve": READ_ALL,
        "create": (401, 403, 403, 403, 201),
        "update": (401, 403, 403, 403, 200),
        "delete": (401, 403, 403, 403, 204),
    },
    "market-data": {
        "list": READ_ALL,
        "retrieve": NO_ROUTE,
        "create": (401, 403, 403, 403, 201),
        "update": NO_ROUTE,
        "delete": NO_ROUTE,
    },
    "trades": READ_ONLY,
    "positions": READ_ONLY,
    "strategy-performance": READ_ONLY,
    # Orders are placed by operators and traders (a market order without a quote is DENIED:
    # still a created order) and never edited or deleted (canceled: trading/tests).
    # Strategies are configured by operators; every role reads them. Signals: read-only.
    "strategies": {
        "list": READ_ALL,
        "retrieve": READ_ALL,
        "create": (401, 403, 403, 403, 201),
        "update": (401, 403, 403, 403, 200),
        "delete": (401, 403, 403, 403, 204),
    },
    "signals": READ_ONLY,
    "orders": {
        "list": READ_ALL,
        "retrieve": READ_ALL,
        "create": (401, 403, 403, 201, 201),
        "update": (401, 403, 403, 405, 405),
        "delete": (401, 403, 403, 405, 405),
    },
    "accounts": READ_ONLY,
    "risk-metrics": READ_ONLY,
    "risk-alerts": READ_ONLY,
    "risk-limit-changes": READ_ONLY,
    "risk-state-changes": READ_ONLY,
    # Locks: operators add and remove them (a removal answers the removed lock; it stays as
    # history), nobody edits one.
    "risk-locks": {
        "list": READ_ALL,
        "retrieve": READ_ALL,
        "create": (401, 403, 403, 403, 201),
        "update": NO_WRITE,
        "delete": (401, 403, 403, 403, 200),
    },
    "system-logs": {**READ_ONLY, "list": READ_OPERATOR, "retrieve": READ_OPERATOR},
    # The detail object is another client's account: hidden (404) from a trader or a client.
    "users": {
        "list": READ_ALL,
        "retrieve": (401, 403, 404, 404, 200),
        "create": (401, 403, 405, 405, 405),
        "update": (401, 403, 404, 404, 200),
        "delete": (401, 403, 405, 405, 405),
    },
    "users/me": {"retrieve": READ_ALL, "update": READ_ALL},
}

CASES = [
    pytest.param(resource, action, role, statuses[i], id=f"{resource}-{action}-{role}")
    for resource, actions in MATRIX.items()
    for action, statuses in actions.items()
    for i, role in enumerate(ROLES)
]


@pytest.fixture
def world(db):
    """One object of every kind; returns the detail key and write payloads per resource."""
    samsung = make_stock()
    kakao = make_stock("035720", "Kakao", "KOSPI", "Internet")  # no trades: deletable
    make_candle(time=T0)
    trade = make_trade(samsung)
    make_position(samsung)
    performance = make_performance()
    metric = make_risk_metric()
    log = make_log()
    order, _ = order_create(
        client_order_id="w-1", symbol="005930", side="BUY", order_type="MARKET", quantity=1,
        actor="test",
    )  # fmt: skip
    account_ensure(broker="paper")
    # Two strategies: "spare" has no signal, so an operator may delete it.
    sma = strategy_create(
        name="sma", kind="sma_crossover", symbols=["005930"], capital_allocation=1000000
    )
    spare = strategy_create(
        name="spare", kind="sma_crossover", symbols=["005930"], capital_allocation=1000000
    )
    signal = Signal.objects.create(
        strategy=sma, symbol=samsung, interval="1m", time=T0, action="BUY", price=70000
    )
    risk_services.limits_update(actor="test", reason="world", max_trades_per_day=21)
    limit_change = LimitChange.objects.get()
    state_change = TradingStateChange.objects.create(
        from_state="ACTIVE", to_state="HALTED", actor="test", reason="world", at=T0
    )
    lock = risk_services.lock_create(
        kind="MANUAL", until=timezone.now() + dt.timedelta(days=1), reason="world",
        actor="test", symbol="005930",
    )  # fmt: skip
    alert = RiskAlert.objects.create(
        alert_type="DAILY_LOSS", severity="CRITICAL", message="world", created_at=T0
    )
    carl = User.objects.create_user("carl-client", "carl@example.com", "x")
    carl.groups.add(Group.objects.get_or_create(name=CLIENT_GROUP)[0])
    return {
        "stocks": (kakao.symbol, {"symbol": "000660", "name": "SK hynix", "market": "KOSPI"}),
        "market-data": ("005930", CANDLE),
        "trades": (trade.pk, {}),
        "positions": (samsung.symbol, {}),
        "strategy-performance": (performance.pk, {}),
        "strategies": (
            spare.pk,
            {
                "name": "new-one",
                "kind": "rsi_reversion",
                "symbols": ["005930"],
                "capital_allocation": "5000000",
            },
        ),
        "signals": (signal.pk, {}),
        "orders": (
            order.pk,
            {
                "client_order_id": "w-2",
                "symbol": "005930",
                "side": "BUY",
                "order_type": "MARKET",
                "quantity": 1,
            },
        ),
        "accounts": ("paper", {}),
        "risk-metrics": (metric.pk, {}),
        "risk-alerts": (alert.pk, {}),
        "risk-limit-changes": (limit_change.pk, {}),
        "risk-state-changes": (state_change.pk, {}),
        "risk-locks": (
            lock.pk,
            {
                "kind": "MANUAL",
                "symbol": "035720",
                "until": (timezone.now() + dt.timedelta(days=1)).isoformat(),
                "reason": "a test lock",
            },
        ),
        "system-logs": (log.pk, {}),
        "users": (carl.pk, {}),
    }


UPDATES = {
    "stocks": {"name": "Kakao Corp."},
    "strategies": {"capital_allocation": "2000000"},
    "users": {"first_name": "Carl"},
}


def _request(api, resource, action, world):
    if resource == "users/me":
        url = "/api/v1/users/me/"
        return (
            api.get(url)
            if action == "retrieve"
            else api.patch(url, {"last_name": "X"}, format="json")
        )
    key, create_payload = world[resource]
    base, detail = f"/api/v1/{resource}/", f"/api/v1/{resource}/{key}/"
    if action == "list":
        return api.get(base)
    if action == "retrieve":
        return api.get(detail)
    if action == "create":
        return api.post(base, create_payload, format="json")
    if action == "update":
        return api.patch(detail, UPDATES.get(resource, {}), format="json")
    return api.delete(detail)


def _state():
    return (
        list(Stock.objects.values_list("symbol", "name")),
        MarketData.objects.count(),
        Order.objects.count(),
        list(Strategy.objects.order_by("pk").values_list("name", "capital_allocation")),
        list(User.objects.order_by("pk").values_list("username", "first_name", "last_name")),
        list(RiskLock.objects.order_by("pk").values_list("pk", "removed_at")),
    )


@pytest.mark.parametrize(("resource", "action", "role", "expected"), CASES)
def test_permission_matrix(resource, action, role, expected, world, personas, api_client_for):
    user = None if role == "anonymous" else personas[role]
    api = api_client_for(user)
    before = _state()

    response = _request(api, resource, action, world)

    assert response.status_code == expected, response.content
    if expected == 401:
        # TokenAuthentication answers first: a 401 that tells the client how to authenticate.
        assert response["WWW-Authenticate"] == "Token"
    if expected >= 400:
        assert _state() == before, "a refused request changed data"
    elif action in ("create", "update", "delete"):
        assert _state() != before


def test_every_routed_resource_is_in_the_matrix(operator, api_client_for):
    root = api_client_for(operator).get("/api/v1/")
    assert root.status_code == 200
    assert set(root.data) == {name for name in MATRIX if "/" not in name}


def test_superuser_is_an_operator(superuser, api_client_for, db):
    log = make_log(timestamp=T0 + minutes(1))
    response = api_client_for(superuser).get("/api/v1/system-logs/")
    assert response.status_code == 200
    # Other rows may be there: the system_logs writer commits on its own connection.
    assert log.pk in {row["id"] for row in response.data["results"]}


def test_inactive_user_token_is_refused(trader, api_client_for):
    api = api_client_for(trader)
    trader.is_active = False
    trader.save()
    assert api.get("/api/v1/stocks/").status_code == 401


def test_session_authentication_works_and_needs_csrf_for_writes(operator, client, db):
    from django.test import Client

    client.force_login(operator)
    assert client.get("/api/v1/stocks/").status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    payload = {"symbol": "000660", "name": "SK hynix", "market": "KOSPI"}
    response = strict.post("/api/v1/stocks/", payload, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
