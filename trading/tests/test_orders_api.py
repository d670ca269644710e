"""/api/v1/orders/ and /api/v1/accounts/: personas, idempotent placing, denials, cancels,
filters, cursor pages, bad payloads, query counts. Orders go through the real OMS and the
paper broker, on quotes written to the Redis test database."""

import datetime as dt
import json
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.keys import quote_key
from qbsite.tests.api_factories import make_stock, walk
from trading import services
from trading.models import Account, Order, OrderStatus, Strategy

pytestmark = pytest.mark.django_db
D = Decimal
URL = "/api/v1/orders/"


def put_quote(client, symbol="005930", close=70000, prev_close=None):
    prev_close = close if prev_close is None else prev_close
    limits = krx.price_limits(D(prev_close), instrument="stock", market="KOSPI")
    client.hset(
        quote_key(symbol),
        mapping={
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "open": str(prev_close),
            "high": str(max(close, prev_close)),
            "low": str(min(close, prev_close)),
            "close": str(close),
            "volume": "1000",
            "prev_close": str(prev_close),
            "change": str(close - prev_close),
            "change_rate": "0",
            "upper_limit": str(limits.upper),
            "lower_limit": str(limits.lower),
        },
    )


@pytest.fixture
def market(db, redis_client):
    make_stock("005930", market="KOSPI")
    make_stock("000660", name="SK hynix", market="KOSPI")
    services.account_ensure(broker="paper", initial_cash=D("10000000"))
    put_quote(redis_client, "005930", 70000)
    put_quote(redis_client, "000660", 180000)
    return redis_client


def buy(cid="c-1", **overrides):
    body = {
        "client_order_id": cid,
        "symbol": "005930",
        "side": "BUY",
        "order_type": "MARKET",
        "quantity": 10,
    }
    return {**body, **overrides}


def limit(cid="l-1", price="69000", **overrides):
    return buy(cid, order_type="LIMIT", limit_price=price, **overrides)


def post(api, body):
    return api.post(URL, body, format="json")


# --- placing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [("anonymous", 401), ("stranger", 403), ("client", 403), ("trader", 201), ("operator", 201)],
)
def test_who_may_place(role, expected, market, personas, api_client_for):
    user = None if role == "anonymous" else personas[role]
    response = post(api_client_for(user), buy())
    assert response.status_code == expected, response.content
    assert Order.objects.count() == (1 if expected == 201 else 0)


def test_a_market_buy_fills_and_shows_its_history(market, trader, api_client_for):
    response = post(api_client_for(trader), buy())
    assert response.status_code == 201, response.data
    order = response.data
    # 70,000 plus one tick (100) of slippage; commission 701,000 x 0.015 % = 105.15 -> 105.
    assert (order["status"], order["filled_quantity"], order["remaining_quantity"]) == (
        "FILLED", 10, 0,
    )  # fmt: skip
    assert order["average_fill_price"] == "70100.0000"
    assert (order["user"], order["strategy"], order["broker"]) == ("tom-trader", None, "paper")
    assert [(t["from_status"], t["to_status"]) for t in order["transitions"]] == [
        ("", "NEW"),
        ("NEW", "SUBMITTED"),
        ("SUBMITTED", "ACCEPTED"),
        ("ACCEPTED", "FILLED"),
    ]
    assert order["transitions"][1]["actor"] == "api:tom-trader"
    [fill] = order["fills"]
    assert (fill["quantity"], fill["price"], fill["commission"]) == (10, "70100.00", "105.0000")
    assert Account.objects.get(broker="paper").cash == D("10000000") - 701000 - 105


def test_the_same_request_twice_is_one_order(market, trader, api_client_for):
    api = api_client_for(trader)
    first = post(api, limit())
    again = post(api, limit())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.data["id"] == first.data["id"]
    assert again.data["status"] == "ACCEPTED"
    assert Order.objects.count() == 1
    # The price may be sent as a number: 69000 is the same term as "69000".
    assert post(api, limit(price=69000)).status_code == 200


def test_the_same_key_with_other_terms_is_a_409_naming_the_order(market, trader, api_client_for):
    api = api_client_for(trader)
    first = post(api, limit())
    response = post(api, limit(price="68900"))
    assert response.status_code == 409
    assert response.data["code"] == "idempotency_conflict"
    assert f"already used by order {first.data['id']}" in response.data["detail"]
    assert "same terms" in response.data["detail"]
    assert Order.objects.count() == 1


def test_another_users_key_is_a_409_that_tells_nothing_about_their_order(
    market, trader, operator, api_client_for
):
    post(api_client_for(trader), limit("shared"))
    for body in (limit("shared"), limit("shared", price="68000")):
        response = post(api_client_for(operator), body)
        assert response.status_code == 409
        assert response.data == {
            "detail": "client_order_id 'shared' is already used by another client's order;"
            " choose another id.",
            "code": "idempotency_conflict",
        }
    assert Order.objects.count() == 1


def test_a_denied_order_is_created_with_its_reason(market, trader, api_client_for):
    api = api_client_for(trader)
    response = post(api, buy("s-1", side="SELL"))
    assert response.status_code == 201
    order = response.data
    assert (order["status"], order["reason_code"]) == ("DENIED", "INSUFFICIENT_POSITION")
    assert "005930" in order["reason"] and order["reason"].endswith(".")
    assert order["closed_at"] is not None and order["fills"] == []
    again = post(api, buy("s-1", side="SELL"))
    assert (again.status_code, again.data["id"], again.data["status"]) == (
        200, order["id"], "DENIED",
    )  # fmt: skip


def test_a_stale_quote_denies_a_market_order(market, trader, api_client_for, settings):
    settings.QUOTE_MAX_AGE_SECONDS = 0
    market.hset(quote_key("005930"), "timestamp", "2020-01-02T00:00:00+00:00")
    response = post(api_client_for(trader), buy())
    assert (response.status_code, response.data["reason_code"]) == (201, "STALE_QUOTE")


BAD = [
    ({"client_order_id": None}, "client_order_id"),
    ({"client_order_id": ""}, "client_order_id"),
    ({"client_order_id": "x" * 65}, "client_order_id"),
    ({"client_order_id": "has space"}, "client_order_id"),
    ({"client_order_id": "-dash-first"}, "client_order_id"),
    ({"client_order_id": "sig-42"}, "client_order_id"),
    ({"client_order_id": 42}, None),  # a number is read as its text: fine
    ({"symbol": "5930"}, "symbol"),
    ({"symbol": "999999"}, "symbol"),
    ({"symbol": None}, "symbol"),
    ({"side": "buy"}, "side"),
    ({"side": "HOLD"}, "side"),
    ({"order_type": "STOP"}, "order_type"),
    ({"quantity": 0}, "quantity"),
    ({"quantity": -5}, "quantity"),
    ({"quantity": 1.5}, "quantity"),
    ({"quantity": "ten"}, "quantity"),
    ({"quantity": True}, "quantity"),
    ({"quantity": 2**31}, "quantity"),
    ({"quantity": None}, "quantity"),
    ({"order_type": "LIMIT"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": None}, "limit_price"),
    ({"limit_price": "70000"}, "limit_price"),  # a MARKET order takes none
    ({"order_type": "LIMIT", "limit_price": "NaN"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "Infinity"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "-70000"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "0"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "abc"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "70000.123"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": "1e20"}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": True}, "limit_price"),
    ({"order_type": "LIMIT", "limit_price": [70000]}, "limit_price"),
    ({"status": "FILLED"}, "status"),
    ({"user": 1}, "user"),
    ({"strategy": "sma"}, "strategy"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_payloads_are_400s_naming_the_field(change, field, market, trader, api_client_for):
    body = {**buy(), **change}
    response = post(api_client_for(trader), body)
    if field is None:
        assert response.status_code == 201, response.data
        return
    assert response.status_code == 400, response.content
    assert field in response.data, response.data
    assert Order.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"client_order_id": "c", "symbol": "005930", "side": "BUY", "order_type": "LIMIT",'
        b' "quantity": 1, "limit_price": NaN}',
        b"not json",
        b"[1, 2]",
        b"",
    ],
)
def test_malformed_bodies_are_400s(raw, market, trader, api_client_for):
    response = api_client_for(trader).post(URL, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert Order.objects.count() == 0


def test_missing_fields_are_all_named(market, trader, api_client_for):
    response = post(api_client_for(trader), {})
    assert response.status_code == 400
    assert set(response.data) == {"client_order_id", "symbol", "side", "order_type", "quantity"}


# --- cancel ----------------------------------------------------------------------------------


def test_a_trader_cancels_its_own_resting_order(market, trader, api_client_for):
    api = api_client_for(trader)
    order = post(api, limit()).data
    assert order["status"] == "ACCEPTED"
    url = f"{URL}{order['id']}/cancel/"
    response = api.post(url, {"reason": "changed my mind"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["status"] == "CANCELED"
    assert [t["to_status"] for t in response.data["transitions"]][-2:] == [
        "CANCEL_PENDING", "CANCELED",
    ]  # fmt: skip
    assert response.data["transitions"][-2]["reason"] == "changed my mind"
    # A final order cannot be canceled: 409 naming its status.
    again = api.post(url, format="json")
    assert again.status_code == 409
    assert again.data["code"] == "illegal_transition"
    assert "is CANCELED" in again.data["detail"]


def test_who_may_cancel_what(market, personas, api_client_for, django_user_model):
    mine = post(api_client_for(personas["trader"]), limit("t-1")).data["id"]
    other_trader = django_user_model.objects.create_user("tess-trader")
    other_trader.groups.add(personas["trader"].groups.first())
    theirs = post(api_client_for(other_trader), limit("t-2")).data["id"]
    strategy = Strategy.objects.create(name="sma", kind="sma", capital_allocation=D(1000000))
    robot, _ = services.order_create(
        client_order_id="robot-1", symbol="005930", side="BUY", order_type="MARKET",
        quantity=1, strategy=strategy, actor="test",
    )  # fmt: skip

    def cancel(role, order_id):
        user = None if role == "anonymous" else personas[role]
        return api_client_for(user).post(f"{URL}{order_id}/cancel/", format="json").status_code

    assert [cancel(r, theirs) for r in ("anonymous", "stranger", "client", "trader")] == [
        401, 403, 403, 403,
    ]  # fmt: skip
    assert cancel("trader", robot.pk) == 403
    assert Order.objects.exclude(status__in=["ACCEPTED", "NEW"]).count() == 0
    assert cancel("trader", mine) == 200
    assert cancel("operator", theirs) == 200
    assert cancel("operator", robot.pk) == 200
    assert cancel("operator", 999999) == 404
    assert set(Order.objects.values_list("status", flat=True)) == {"CANCELED"}


def test_bad_cancel_bodies(market, trader, api_client_for):
    api = api_client_for(trader)
    order_id = post(api, limit()).data["id"]
    url = f"{URL}{order_id}/cancel/"
    assert "reason" in api.post(url, {"reason": "x" * 501}, format="json").data
    assert "force" in api.post(url, {"force": True}, format="json").data
    assert Order.objects.get(pk=order_id).status == OrderStatus.ACCEPTED


# --- reading ---------------------------------------------------------------------------------


@pytest.fixture
def book(market, trader, operator, api_client_for):
    """Five orders: two by the trader, two by the operator, one by a strategy."""
    ids = {}
    ids["t-buy"] = post(api_client_for(trader), buy("t-buy")).data["id"]  # FILLED
    ids["t-lim"] = post(api_client_for(trader), limit("t-lim")).data["id"]  # ACCEPTED
    ids["o-sell"] = post(api_client_for(operator), buy("o-sell", side="SELL", quantity=1000)).data[
        "id"
    ]  # DENIED
    ids["o-hyn"] = post(
        api_client_for(operator), limit("o-hyn", symbol="000660", price="170000")
    ).data["id"]  # ACCEPTED
    strategy = Strategy.objects.create(name="sma", kind="sma", capital_allocation=D(1000000))
    robot, _ = services.order_create(
        client_order_id="robot-1", symbol="000660", side="BUY", order_type="MARKET",
        quantity=1, strategy=strategy, actor="test",
    )  # fmt: skip
    ids["robot"] = robot.pk
    return ids


def _keys(response, book):
    assert response.status_code == 200, response.data
    names = {v: k for k, v in book.items()}
    return [names[row["id"]] for row in response.data["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["robot", "o-hyn", "o-sell", "t-lim", "t-buy"]),
        ({"status": "ACCEPTED"}, ["o-hyn", "t-lim"]),
        ({"status": ["FILLED", "DENIED"]}, ["o-sell", "t-buy"]),
        ({"open": "true"}, ["robot", "o-hyn", "t-lim"]),
        ({"open": "false"}, ["o-sell", "t-buy"]),
        ({"symbol": "000660"}, ["robot", "o-hyn"]),
        ({"side": "SELL"}, ["o-sell"]),
        ({"order_type": "LIMIT"}, ["o-hyn", "t-lim"]),
        ({"strategy": "sma"}, ["robot"]),
        ({"client_order_id": "t-lim"}, ["t-lim"]),
        ({"mine": "true"}, ["t-lim", "t-buy"]),
        ({"mine": "false"}, ["robot", "o-hyn", "o-sell"]),
    ],
)
def test_order_filters(params, expected, book, trader, api_client_for):
    assert _keys(api_client_for(trader).get(URL, params), book) == expected


def test_created_range(book, client_user, api_client_for):
    created = dict(Order.objects.values_list("client_order_id", "created_at"))
    middle = created["o-sell"]
    api = api_client_for(client_user)
    after = api.get(URL, {"created_after": middle.isoformat()})
    assert _keys(after, book) == ["robot", "o-hyn", "o-sell"]
    before = api.get(URL, {"created_before": middle.isoformat()})
    assert _keys(before, book) == ["t-lim", "t-buy"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "LOST"}, "status"),
        ({"symbol": "abc"}, "symbol"),
        ({"open": "maybe"}, "open"),
        ({"created_after": "2026-11-25T10:00:00"}, "created_after"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"cursor": "garbage"}, "cursor"),
        ({"page_size": "0"}, "page_size"),
    ],
)
def test_bad_filters_are_400s(params, field, book, trader, api_client_for):
    response = api_client_for(trader).get(URL, params)
    assert response.status_code == 400
    assert field in response.data


@pytest.mark.parametrize("page_size", [1, 2, 4])
def test_the_cursor_walks_every_order_once(page_size, book, trader, api_client_for):
    rows = walk(api_client_for(trader), f"{URL}?page_size={page_size}")
    assert [row["id"] for row in rows] == sorted(book.values(), reverse=True)


def test_every_role_reads_orders(book, personas, api_client_for):
    for role in ("client", "trader", "operator"):
        api = api_client_for(personas[role])
        assert api.get(URL).status_code == 200
        assert api.get(f"{URL}{book['robot']}/").status_code == 200
    assert api_client_for(personas["stranger"]).get(URL).status_code == 403
    assert api_client_for(None).get(URL).status_code == 401
    assert api_client_for(personas["client"]).get(f"{URL}999999/").status_code == 404


def test_orders_cannot_be_edited_or_deleted(book, operator, api_client_for):
    api = api_client_for(operator)
    detail = f"{URL}{book['t-lim']}/"
    assert api.patch(detail, {"quantity": 1}, format="json").status_code == 405
    assert api.delete(detail).status_code == 405


def test_list_and_detail_queries_are_pinned(
    book, trader, api_client_for, django_assert_num_queries
):
    api = api_client_for(trader)
    # The token with its user and role groups; the page with strategy and user joined.
    with django_assert_num_queries(2):
        assert len(api.get(URL).data["results"]) == 5
    # ... plus the order, its transitions and its fills.
    with django_assert_num_queries(4):
        response = api.get(f"{URL}{book['t-buy']}/")
    assert len(response.data["transitions"]) == 4 and len(response.data["fills"]) == 1


# --- accounts --------------------------------------------------------------------------------


def test_accounts_are_read_only_cash(market, personas, api_client_for):
    response = api_client_for(personas["client"]).get("/api/v1/accounts/")
    assert response.status_code == 200
    assert response.data["results"] == [
        {
            "broker": "paper",
            "cash": "10000000.0000",
            "initial_cash": "10000000.0000",
            "updated_at": response.data["results"][0]["updated_at"],
        }
    ]
    operator = api_client_for(personas["operator"])
    assert operator.get("/api/v1/accounts/paper/").data["cash"] == "10000000.0000"
    assert operator.patch("/api/v1/accounts/paper/", {"cash": "1"}, format="json").status_code == (
        405
    )
    assert operator.post("/api/v1/accounts/", {"broker": "x"}, format="json").status_code == 405
    assert api_client_for(personas["stranger"]).get("/api/v1/accounts/").status_code == 403
    assert json.loads(operator.get("/api/v1/accounts/nope/").content)["detail"]
