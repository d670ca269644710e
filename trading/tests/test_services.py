"""The money path (trading/services.py): orders, fills, positions and cash, computed by hand.

Every figure below was worked out on paper from KRX.md: commission 0.015 % per side truncated to
the won; sell tax on KOSPI from 2026 = 0.05 % transaction tax + 0.15 % rural tax, each truncated;
KOSDAQ 2025 = 0.15 %. The ledger's arithmetic is in the module docstring of trading/services.py.
"""

import json
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from qbsite.events import EventType
from qbsite.exceptions import Conflict, NotFound
from qbsite.tests.api_factories import make_stock
from trading import services
from trading.models import Account, Order, OrderStatus, OrderTransition, Position, Trade
from trading.states import IllegalTransition

D = Decimal
# Wednesday 2026-11-25, 10:00 in Seoul: a KRX trading day (settles Friday 27th, 2026 rates).
T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


@pytest.fixture
def stock(db):
    return make_stock("005930", market="KOSPI")


@pytest.fixture
def account(db):
    return services.account_ensure(broker="paper", initial_cash=D("10000000"))


def _order(symbol="005930", side="BUY", quantity=10, cid=None, order_type="MARKET", **extra):
    cid = cid or f"{side}-{quantity}-{Order.objects.count()}"
    order, created = services.order_create(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=quantity,
        actor="test",
        at=T,
        **extra,
    )
    assert created
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    return order


def _fill(order, quantity, price, execution_id=None):
    return services.order_apply_fill(
        order_id=order.pk,
        execution_id=execution_id or f"{order.client_order_id}-{quantity}-{price}",
        quantity=quantity,
        price=D(price),
        at=T,
    )


# --- the hand-computed ledger -----------------------------------------------------------------


def test_two_buys_two_sells_to_the_won(stock, account):
    # Buy 10 @ 70,000: 700,000; commission 105.
    buy1 = _fill(_order(quantity=10), 10, "70000")
    assert (buy1.commission, buy1.tax, buy1.profit_loss) == (D(105), D(0), None)
    # Buy 5 @ 71,000: 355,000; commission 53.25 -> 53.
    buy2 = _fill(_order(quantity=5), 5, "71000")
    assert buy2.commission == D(53)
    position = Position.objects.get(symbol=stock)
    assert position.quantity == 15
    assert position.average_price == D("70333.3333")  # 1,055,000 / 15, fees excluded
    assert position.cost_basis == D("1055158")  # 1,055,000 + 105 + 53

    # Sell 6 @ 72,000: 432,000; commission 64.8 -> 64; tax 216 + 648 = 864.
    # Cost removed 1,055,158 x 6/15 = 422,063.2; realized 432,000 - 64 - 864 - 422,063.2.
    sell1 = _fill(_order(side="SELL", quantity=6), 6, "72000")
    assert (sell1.commission, sell1.tax) == (D(64), D(864))
    assert sell1.profit_loss == D("9008.8")
    position.refresh_from_db()
    assert (position.quantity, position.cost_basis) == (9, D("633094.8"))
    assert position.average_price == D("70333.3333")  # a sell leaves the average alone

    # Sell the last 9 @ 69,000: 621,000; commission 93.15 -> 93; tax 310.5 -> 310 + 931.5 -> 931.
    # All the cost left goes: realized 621,000 - 93 - 1,241 - 633,094.8 = -13,428.8.
    sell2 = _fill(_order(side="SELL", quantity=9), 9, "69000")
    assert (sell2.commission, sell2.tax, sell2.profit_loss) == (D(93), D(1241), D("-13428.8"))
    position.refresh_from_db()
    assert (position.quantity, position.average_price, position.cost_basis) == (0, 0, 0)
    assert position.unrealized_pnl == 0
    # The round trip: sold 1,050,738 net, paid 1,055,158 with fees: -4,420 to the won.
    assert position.realized_pnl == D("-4420")
    account.refresh_from_db()
    assert account.cash == D("10000000") - D("1055158") + D("1050738") == D("9995580")


def test_2025_kosdaq_sale_pays_the_2025_rate(db):
    make_stock("035720", name="Kakao", market="KOSDAQ")
    services.account_ensure(broker="paper", initial_cash=D("5000000"))
    when = datetime(2025, 6, 10, 1, 0, tzinfo=UTC)
    buy = _order(symbol="035720", quantity=100)
    services.order_apply_fill(
        order_id=buy.pk, execution_id="b", quantity=100, price=D("10000"), at=when
    )
    sell = _order(symbol="035720", side="SELL", quantity=100)
    trade = services.order_apply_fill(
        order_id=sell.pk, execution_id="s", quantity=100, price=D("10500"), at=when
    )
    # 1,050,000 x 0.15 % = 1,575; commission 157.5 -> 157. Bought 1,000,000 + 150.
    assert (trade.commission, trade.tax) == (D(157), D(1575))
    assert trade.profit_loss == D("1050000") - 157 - 1575 - D("1000150") == D("48118")


def test_a_sale_on_29_december_2025_settles_in_2026_and_pays_2026_tax(stock, account):
    when = datetime(2025, 12, 29, 1, 0, tzinfo=UTC)  # settles 2026-01-02 (T+2 over the holidays)
    buy = _order(quantity=10)
    services.order_apply_fill(
        order_id=buy.pk, execution_id="b", quantity=10, price=D("50000"), at=when
    )
    sell = _order(side="SELL", quantity=10)
    trade = services.order_apply_fill(
        order_id=sell.pk, execution_id="s", quantity=10, price=D("50000"), at=when
    )
    assert trade.tax == D(250) + D(750)  # 500,000 x (0.05 % + 0.15 %)


def test_a_fill_on_a_closed_day_is_taxed_as_of_the_next_trading_day(stock, account):
    saturday = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # the simulated market runs any day
    assert services.tax_trade_date(saturday).isoformat() == "2026-11-30"
    buy = _order(quantity=1)
    services.order_apply_fill(
        order_id=buy.pk, execution_id="b", quantity=1, price=D("70000"), at=saturday
    )
    sell = _order(side="SELL", quantity=1)
    trade = services.order_apply_fill(
        order_id=sell.pk, execution_id="s", quantity=1, price=D("70000"), at=saturday
    )
    assert trade.tax == D(35) + D(105)


# --- partial fills, order state ---------------------------------------------------------------


def test_partial_fills_move_the_order_and_average_its_price(stock, account):
    order = _order(quantity=10)
    _fill(order, 3, "70000")
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 3)
    assert order.average_fill_price == D("70000")
    _fill(order, 4, "70100")
    _fill(order, 3, "70200")
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (OrderStatus.FILLED, 10)
    assert order.average_fill_price == D("70100")  # (210,000 + 280,400 + 210,600) / 10
    assert order.closed_at is not None and order.last_fill_at == T
    history = list(order.transitions.values_list("from_status", "to_status"))
    assert history == [
        ("", "NEW"),
        ("NEW", "SUBMITTED"),
        ("SUBMITTED", "PARTIALLY_FILLED"),
        ("PARTIALLY_FILLED", "PARTIALLY_FILLED"),
        ("PARTIALLY_FILLED", "FILLED"),
    ]
    assert list(order.transitions.values_list("filled_quantity", flat=True)) == [0, 0, 3, 7, 10]
    assert Trade.objects.filter(order=order).count() == 3


def test_a_partial_fill_while_a_cancel_is_pending_keeps_the_cancel_pending(stock, account):
    order = _order(quantity=10, order_type="LIMIT", limit_price=D("70000"))
    services.order_request_cancel(order_id=order.pk, actor="test")
    _fill(order, 4, "70000")
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (OrderStatus.CANCEL_PENDING, 4)
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.CANCELED, actor="broker")
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELED and order.filled_quantity == 4


def test_cancel_requests(stock, account):
    new, _ = services.order_create(
        client_order_id="never-sent", symbol="005930", side="BUY", order_type="MARKET",
        quantity=1, actor="test",
    )  # fmt: skip
    assert services.order_request_cancel(order_id=new.pk, actor="op").status == "CANCELED"
    live = _order(quantity=1)
    assert services.order_request_cancel(order_id=live.pk, actor="op").status == "CANCEL_PENDING"
    # Asking again while pending is not an error and records nothing new.
    count = OrderTransition.objects.filter(order=live).count()
    assert services.order_request_cancel(order_id=live.pk, actor="op").status == "CANCEL_PENDING"
    assert OrderTransition.objects.filter(order=live).count() == count
    done = _order(quantity=1)
    _fill(done, 1, "70000")
    with pytest.raises(IllegalTransition, match="is FILLED"):
        services.order_request_cancel(order_id=done.pk, actor="op")
    with pytest.raises(NotFound):
        services.order_request_cancel(order_id=999999, actor="op")


# --- fills that must not count --------------------------------------------------------------


def test_the_same_execution_twice_is_applied_once(stock, account):
    order = _order(quantity=10)
    first = _fill(order, 4, "70000", execution_id="E1")
    assert first is not None
    assert _fill(order, 4, "70000", execution_id="E1") is None
    order.refresh_from_db()
    assert order.filled_quantity == 4
    assert Position.objects.get(symbol=stock).quantity == 4
    assert Trade.objects.count() == 1
    account.refresh_from_db()
    assert account.cash == D("10000000") - D("280000") - D("42")


@pytest.mark.parametrize(
    ("quantity", "price", "error"),
    [
        (11, "70000", "exceeds order .* remaining 10"),
        (0, "70000", "at least 1 share"),
        (1.5, "70000", "whole number of shares"),
        (1, "0", "fill price must be positive"),
        (1, "NaN", "not a finite number"),
        (1, 70000.5, "not a float"),
    ],
)
def test_bad_fills_are_refused_and_change_nothing(stock, account, quantity, price, error):
    order = _order(quantity=10)
    with pytest.raises(Conflict if "exceeds" in error else services.OrderError, match=error):
        services.order_apply_fill(
            order_id=order.pk, execution_id="X", quantity=quantity, price=price, at=T
        )
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (OrderStatus.SUBMITTED, 0)
    assert not Trade.objects.exists() and not Position.objects.filter(quantity__gt=0).exists()


def test_a_fill_without_execution_id_or_on_a_final_order_is_refused(stock, account):
    order = _order(quantity=1)
    with pytest.raises(services.FillError, match="execution_id"):
        services.order_apply_fill(order_id=order.pk, execution_id=" ", quantity=1, price=1, at=T)
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.CANCELED, actor="test")
    with pytest.raises(services.FillError, match="is CANCELED; it cannot take a fill"):
        _fill(order, 1, "70000")
    new, _ = services.order_create(
        client_order_id="unsent", symbol="005930", side="BUY", order_type="MARKET", quantity=1,
        actor="test",
    )  # fmt: skip
    with pytest.raises(services.FillError, match="is NEW"):
        _fill(new, 1, "70000")


def test_selling_more_than_is_held_is_refused_whole(stock, account):
    _fill(_order(quantity=3), 3, "70000")
    sell = _order(side="SELL", quantity=5)
    with pytest.raises(services.FillError, match="exceeds the 3 held"):
        _fill(sell, 5, "71000")
    position = Position.objects.get(symbol=stock)
    assert position.quantity == 3
    assert Trade.objects.filter(side="SELL").count() == 0
    sell.refresh_from_db()
    assert sell.filled_quantity == 0


# --- order creation -------------------------------------------------------------------------


def test_order_create_is_idempotent_on_the_client_order_id(stock):
    terms = dict(symbol="005930", side="BUY", order_type="LIMIT", quantity=5, actor="api")
    first, created = services.order_create(client_order_id="K1", limit_price="70000", **terms)
    again, created_again = services.order_create(
        client_order_id="K1", limit_price=D("70000.00"), **terms
    )
    assert (created, created_again, again.pk) == (True, False, first.pk)
    with pytest.raises(Conflict, match=r"K1.*already used by order") as info:
        services.order_create(client_order_id="K1", limit_price="70100", **terms)
    assert info.value.code == "idempotency_conflict"
    assert Order.objects.count() == 1


def test_order_create_with_a_new_key_skips_the_look_first_and_still_finds_a_stored_one(stock):
    terms = dict(symbol="005930", side="BUY", order_type="LIMIT", quantity=5, actor="engine")
    with CaptureQueriesContext(connection) as plain:
        services.order_create(client_order_id="K0", limit_price="70000", **terms)
    with CaptureQueriesContext(connection) as queries:
        first, created = services.order_create(
            client_order_id="K1", limit_price="70000", new_key=True, **terms
        )
    assert created and len(queries) == len(plain) - 1 == 1
    assert Order.objects.get(client_order_id="K1").transitions.get().to_status == "NEW"
    # The caller was wrong (the key is stored): the insert takes nothing, the stored order
    # comes back, or a Conflict naming the key when the terms differ.
    again, created = services.order_create(
        client_order_id="K1", limit_price=D("70000"), new_key=True, **terms
    )
    assert (again.pk, created) == (first.pk, False)
    with pytest.raises(Conflict, match=r"K1.*already used by order"):
        services.order_create(client_order_id="K1", limit_price="70100", new_key=True, **terms)
    assert Order.objects.count() == 2


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"side": "HOLD"}, "side must be BUY or SELL"),
        ({"order_type": "STOP"}, "order_type must be MARKET or LIMIT"),
        ({"quantity": 0}, "at least 1 share"),
        ({"quantity": "10"}, "whole number of shares"),
        ({"order_type": "LIMIT"}, "needs a limit_price"),
        ({"limit_price": "70000"}, "MARKET order takes no limit_price"),
        ({"order_type": "LIMIT", "limit_price": "-5"}, "limit_price must be positive"),
        ({"order_type": "LIMIT", "limit_price": "abc"}, "is not a number"),
        ({"symbol": "999999"}, "Unknown symbol '999999'"),
        ({"client_order_id": ""}, "client_order_id must be a non-empty"),
        ({"client_order_id": "x" * 65}, "at most 64"),
        ({"at": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_order_create_names_what_is_wrong(stock, changes, error):
    terms = dict(
        client_order_id="C", symbol="005930", side="BUY", order_type="MARKET", quantity=1,
        actor="api",
    )  # fmt: skip
    with pytest.raises(services.OrderError, match=error):
        services.order_create(**{**terms, **changes})
    assert not Order.objects.exists()


def test_account_ensure_keeps_an_existing_account(db):
    first = services.account_ensure(broker="paper", initial_cash=D("1000"))
    again = services.account_ensure(broker="paper", initial_cash=D("99999"))
    assert (again.pk, again.cash) == (first.pk, D("1000"))
    default = services.account_ensure(broker="other")
    assert default.cash == D("100000000")


def test_position_mark(stock, account):
    assert services.position_mark(symbol="005930", price="70000") is None
    _fill(_order(quantity=10), 10, "70000")
    position = services.position_mark(symbol="005930", price="71000")
    assert position.unrealized_pnl == D("710000") - D("700105")
    position.refresh_from_db()
    assert position.current_price == D("71000")


# --- events -------------------------------------------------------------------------------


def test_a_fill_publishes_order_executed_and_position_updated_after_commit(
    stock, account, django_capture_on_commit_callbacks, redis_client
):
    pubsub = redis_client.pubsub()
    pubsub.subscribe("events:order_executed", "events:position_updated")
    for _ in range(2):
        pubsub.get_message(timeout=5)
    order = _order(quantity=10)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _fill(order, 10, "70000", execution_id="E9")
    assert len(callbacks) == 2  # order_executed and position_updated (FILLED publishes nothing)
    received = {}
    for _ in range(50):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        if message:
            envelope = json.loads(message["data"])
            data = envelope["data"]
            # Other test runs may share this Redis: keep only this test's order and symbol.
            if data.get("order_id", order.pk) == order.pk and data["symbol"] == "005930":
                received[envelope["event_type"]] = data
        if len(received) == 2:
            break
    pubsub.close()
    executed = received[EventType.ORDER_EXECUTED]
    assert executed["execution_id"] == "E9"
    assert (executed["fill_quantity"], executed["fill_price"]) == (10, "70000")
    assert (executed["status"], executed["commission"], executed["tax"]) == ("FILLED", "105", "0")
    position = received[EventType.POSITION_UPDATED]
    assert (position["symbol"], position["quantity"], position["cost_basis"]) == (
        "005930",
        10,
        "700105.0000",
    )


# --- concurrency ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_fills_on_one_position_all_count(stock):
    services.account_ensure(broker="paper", initial_cash=D("100000000"))
    orders = [_order(quantity=10, cid=f"par-{i}") for i in range(8)]
    errors = []
    barrier = threading.Barrier(len(orders))

    def fill(order):
        try:
            barrier.wait(timeout=10)
            for step in range(5):
                _fill(order, 2, "70000", execution_id=f"{order.pk}-{step}")
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=fill, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    position = Position.objects.get(symbol=stock)
    assert position.quantity == 80
    assert Trade.objects.count() == 40
    assert position.cost_basis == 40 * (D("140000") + D("21"))
    account = Account.objects.get(broker="paper")
    assert account.cash == D("100000000") - 40 * D("140021")
    assert set(Order.objects.values_list("status", flat=True)) == {"FILLED"}


# --- row_lock: the order path's locks without the ORM's query building --------------------------


def _fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_row_lock_reads_what_the_orm_reads_with_its_related_rows(stock):
    from trading.tests.oms_helpers import make_strategy

    strategy = make_strategy()  # JSON, array, Decimal and time columns on a related row
    placed = _order(cid="with-strategy", strategy=strategy, limit_price=D("70100"),
                    order_type="LIMIT")  # fmt: skip
    alone = _order(cid="no-strategy", side="SELL")
    for order in (placed, alone):
        with transaction.atomic():
            locked = services.row_lock(Order, order.pk, related=("symbol", "strategy"))
            orm = (
                Order.objects.select_for_update(of=("self",))
                .select_related("symbol", "strategy")
                .get(pk=order.pk)
            )
        assert _fields(locked) == _fields(orm)
        assert [type(v) for v in _fields(locked).values()] == [
            type(v) for v in _fields(orm).values()
        ]
        assert _fields(locked.symbol) == _fields(orm.symbol)
        assert not locked._state.adding and locked._state.db == "default"
    with CaptureQueriesContext(connection) as queries:
        assert services.order_lock(placed.pk).strategy.parameters == strategy.parameters
        assert services.order_lock(alone.pk).strategy is None  # cached: no query for it
    assert len(queries) == 2
    assert services.row_lock(Order, 10**9) is None
    with pytest.raises(NotFound, match=f"No order {10**9}"):
        services.order_lock(10**9)


@pytest.mark.django_db(transaction=True)
def test_row_lock_holds_the_row_until_the_transaction_ends(stock):
    import psycopg

    from qbsite.testing import database_conninfo

    order = _order(cid="locked")
    with psycopg.connect(database_conninfo(), autocommit=True) as other:
        with transaction.atomic():
            services.row_lock(Order, order.pk)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE NOWAIT", [order.pk])
        other.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE NOWAIT", [order.pk])
