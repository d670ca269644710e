"""PostgreSQL itself rejects bad trades, positions, strategy_performance, strategies, signals,
orders, order transitions and accounts rows (full_clean bypassed)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from marketdata.models import Stock
from trading.models import (
    Account,
    Order,
    OrderTransition,
    Position,
    Signal,
    Strategy,
    StrategyPerformance,
    Trade,
)

pytestmark = pytest.mark.django_db


def assert_rejected_by(constraints: set[str], create) -> None:
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        create()
    name = info.value.__cause__.diag.constraint_name
    assert name in constraints or any(
        c.endswith("*") and name.startswith(c[:-1]) for c in constraints
    ), name


@pytest.fixture
def stock():
    return Stock.objects.create(symbol="005930", name="Samsung Electronics", market="KOSPI")


def trade_fields(stock, **overrides):
    fields = {
        "timestamp": datetime(2026, 3, 3, 1, 2, 3, tzinfo=UTC),
        "symbol": stock,
        "side": "BUY",
        "quantity": 10,
        "price": Decimal("70000"),
        "commission": Decimal("10.5"),
        "tax": Decimal("0"),
        "strategy": "sma_cross",
        "order_type": "MARKET",
    }
    return {**fields, **overrides}


def position_fields(stock, **overrides):
    fields = {
        "symbol": stock,
        "quantity": 10,
        "average_price": Decimal("70000"),
        "current_price": Decimal("71000"),
        "unrealized_pnl": Decimal("10000"),
        "realized_pnl": Decimal("-2500.5"),
    }
    return {**fields, **overrides}


def performance_fields(**overrides):
    fields = {
        "strategy": "sma_cross",
        "date": date(2026, 3, 3),
        "total_return": Decimal("0.0123"),
        "trades_count": 4,
        "win_rate": Decimal("0.5"),
        "max_drawdown": Decimal("0.02"),
        "sharpe_ratio": Decimal("1.3"),
    }
    return {**fields, **overrides}


TRADE_CASES = [
    ("trades_quantity_gt_0", {"quantity": 0}),
    ("trades_quantity_check", {"quantity": -1}),  # PositiveIntegerField's own CHECK
    ("trades_price_gt_0", {"price": Decimal("0")}),
    ("trades_commission_gte_0", {"commission": Decimal("-0.01")}),
    ("trades_tax_gte_0", {"tax": Decimal("-1")}),
    ("trades_side_valid", {"side": "HOLD"}),
    ("trades_order_type_valid", {"order_type": "STOP"}),
    ("trades_status_valid", {"status": "LOST"}),
    ("trades_profit_loss_only_on_sell", {"profit_loss": Decimal("100")}),
]
POSITION_CASES = [
    # Both CHECKs forbid it; PostgreSQL reports whichever it evaluates first.
    (
        {"positions_quantity_gte_0", "positions_quantity_check"},
        {"quantity": -1, "unrealized_pnl": 0},
    ),
    (
        {"positions_average_price_gte_0"},
        {"quantity": 0, "average_price": Decimal("-1"), "unrealized_pnl": 0},
    ),
    ({"positions_open_has_average_price"}, {"average_price": Decimal("0")}),
    (
        {"positions_flat_has_no_unrealized_pnl"},
        {"quantity": 0, "average_price": Decimal("0"), "unrealized_pnl": Decimal("5")},
    ),
    ({"positions_current_price_gt_0"}, {"current_price": Decimal("0")}),
    ({"positions_cost_basis_valid"}, {"cost_basis": Decimal("-1")}),
    (
        {"positions_cost_basis_valid"},
        {"quantity": 0, "average_price": 0, "unrealized_pnl": 0, "cost_basis": Decimal("5")},
    ),
]
PERFORMANCE_CASES = [
    ("strategy_performance_win_rate_0_1", {"win_rate": Decimal("1.5")}),
    ("strategy_performance_win_rate_0_1", {"win_rate": Decimal("-0.1")}),
    ("strategy_performance_max_drawdown_0_1", {"max_drawdown": Decimal("1.2")}),
    ("strategy_performance_max_drawdown_0_1", {"max_drawdown": Decimal("-0.1")}),
    ("strategy_performance_return_gte_minus_1", {"total_return": Decimal("-1.5")}),
    ("strategy_performance_strategy_not_blank", {"strategy": ""}),
    ("strategy_performance_trades_count_check", {"trades_count": -1}),
]


def test_good_rows_are_accepted(stock):
    Trade.objects.create(**trade_fields(stock))
    Trade.objects.create(
        **trade_fields(stock, side="SELL", order_type="LIMIT", profit_loss=Decimal("-1500.25"))
    )
    Position.objects.create(**position_fields(stock))
    other = Stock.objects.create(symbol="035720", name="Kakao", market="KOSPI")
    Position.objects.create(
        **position_fields(other, quantity=0, average_price=0, current_price=None, unrealized_pnl=0)
    )
    StrategyPerformance.objects.create(**performance_fields())
    StrategyPerformance.objects.create(**performance_fields(date=date(2026, 3, 4)))
    StrategyPerformance.objects.create(
        **performance_fields(strategy="rsi", total_return=Decimal("-1"), win_rate=None)
    )
    assert (Trade.objects.count(), Position.objects.count()) == (2, 2)
    assert StrategyPerformance.objects.count() == 3


@pytest.mark.parametrize(("constraint", "overrides"), TRADE_CASES)
def test_trade_check_constraints(stock, constraint, overrides):
    assert_rejected_by(
        {constraint}, lambda: Trade.objects.create(**trade_fields(stock, **overrides))
    )


def test_trade_symbol_must_exist(stock):
    def create():
        # Foreign keys are DEFERRABLE INITIALLY DEFERRED: check now, not at commit.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        Trade.objects.create(**trade_fields(stock, symbol_id="999999", symbol=None))

    assert_rejected_by({"trades_symbol_*"}, create)


@pytest.mark.parametrize(("constraints", "overrides"), POSITION_CASES)
def test_position_check_constraints(stock, constraints, overrides):
    assert_rejected_by(
        constraints, lambda: Position.objects.create(**position_fields(stock, **overrides))
    )


def test_one_position_per_symbol(stock):
    Position.objects.create(**position_fields(stock))
    assert_rejected_by(
        {"positions_symbol_key"}, lambda: Position.objects.create(**position_fields(stock))
    )


@pytest.mark.parametrize(("constraint", "overrides"), PERFORMANCE_CASES)
def test_strategy_performance_check_constraints(constraint, overrides):
    assert_rejected_by(
        {constraint},
        lambda: StrategyPerformance.objects.create(**performance_fields(**overrides)),
    )


def test_one_performance_row_per_strategy_and_date():
    StrategyPerformance.objects.create(**performance_fields())
    assert_rejected_by(
        {"strategy_performance_strategy_date_uniq"},
        lambda: StrategyPerformance.objects.create(**performance_fields(trades_count=9)),
    )


# --- strategies, signals, orders, transitions, accounts -----------------------------------


@pytest.fixture
def strategy():
    return Strategy.objects.create(
        name="sma-cross", kind="sma_crossover", capital_allocation=Decimal("10000000")
    )


def strategy_fields(**overrides):
    fields = {"name": "rsi-rev", "kind": "rsi", "capital_allocation": Decimal("1000000")}
    return {**fields, **overrides}


def signal_fields(strategy, stock, **overrides):
    fields = {
        "strategy": strategy,
        "symbol": stock,
        "interval": "1m",
        "time": datetime(2026, 3, 3, 0, 5, tzinfo=UTC),
        "action": "BUY",
        "confidence": Decimal("0.8"),
        "price": Decimal("70000"),
        "quantity": 10,
    }
    return {**fields, **overrides}


def order_fields(stock, **overrides):
    fields = {
        "client_order_id": "api-1",
        "symbol": stock,
        "side": "BUY",
        "order_type": "LIMIT",
        "quantity": 10,
        "limit_price": Decimal("70000"),
        "filled_quantity": 0,
        "status": "NEW",
        "created_at": datetime(2026, 3, 3, 0, 5, tzinfo=UTC),
    }
    return {**fields, **overrides}


STRATEGY_CASES = [
    ("strategies_allocation_gt_0", {"capital_allocation": Decimal("0")}),
    ("strategies_interval_valid", {"interval": "2m"}),
]
SIGNAL_CASES = [
    ({"signals_action_valid"}, {"action": "HOLD"}),
    ({"signals_confidence_0_1"}, {"confidence": Decimal("1.01")}),
    ({"signals_confidence_0_1"}, {"confidence": Decimal("-0.01")}),
    ({"signals_price_gt_0"}, {"price": Decimal("0")}),
    ({"signals_quantity_gt_0"}, {"quantity": 0}),
    ({"signals_quantity_gt_0", "signals_quantity_check"}, {"quantity": -1}),
    ({"signals_outcome_valid"}, {"outcome": "LOST"}),
]
ORDER_CASES = [
    ({"orders_quantity_gt_0"}, {"quantity": 0}),
    (
        {"orders_quantity_gt_0", "orders_quantity_check", "orders_filled_within_quantity"},
        {"quantity": -1},
    ),
    (
        {"orders_filled_within_quantity"},
        {"filled_quantity": 11, "average_fill_price": Decimal("70000")},
    ),
    (
        {
            "orders_filled_quantity_check",
            "orders_filled_within_quantity",
            "orders_fill_has_average_price",
        },
        {"filled_quantity": -1},
    ),
    ({"orders_side_valid"}, {"side": "HOLD"}),
    ({"orders_type_valid", "orders_limit_price_iff_limit"}, {"order_type": "STOP"}),
    ({"orders_status_valid"}, {"status": "LOST"}),
    # NULL > 0 is NULL, and a CHECK that is NULL passes: these two pin the explicit IS NOT NULL.
    ({"orders_limit_price_iff_limit"}, {"limit_price": None}),
    ({"orders_limit_price_iff_limit"}, {"limit_price": Decimal("0")}),
    ({"orders_limit_price_iff_limit"}, {"order_type": "MARKET"}),
    ({"orders_filled_means_all"}, {"status": "FILLED"}),
    ({"orders_fill_has_average_price"}, {"filled_quantity": 5}),
    ({"orders_fill_has_average_price"}, {"filled_quantity": 5, "average_fill_price": 0}),
    ({"orders_client_order_id_not_blank"}, {"client_order_id": ""}),
]


def test_good_order_side_rows_are_accepted(stock, strategy):
    signal = Signal.objects.create(**signal_fields(strategy, stock))
    Signal.objects.create(
        **signal_fields(
            strategy,
            stock,
            time=datetime(2026, 3, 3, 0, 6, tzinfo=UTC),
            quantity=None,
            outcome="SKIPPED",
        )
    )
    order = Order.objects.create(
        **order_fields(
            stock,
            strategy=strategy,
            signal=signal,
            status="FILLED",
            filled_quantity=10,
            average_fill_price=Decimal("70000.5"),
            broker_order_id="B1",
        )
    )
    # Blank broker ids are many (not sent yet); a market order has no limit price.
    Order.objects.create(**order_fields(stock, client_order_id="api-2"))
    Order.objects.create(
        **order_fields(stock, client_order_id="api-3", order_type="MARKET", limit_price=None)
    )
    OrderTransition.objects.create(
        order=order, from_status="", to_status="NEW", at=order.created_at, actor="test"
    )
    Account.objects.create(broker="paper", cash=Decimal("-5"), initial_cash=Decimal("0"))
    Trade.objects.create(**trade_fields(stock, order=order, execution_id="E1"))
    Trade.objects.create(**trade_fields(stock, order=order, execution_id="E2"))
    # Trades recorded by hand (no order) need no execution id, and may repeat a blank one.
    Trade.objects.create(**trade_fields(stock))
    Trade.objects.create(**trade_fields(stock))
    assert (Signal.objects.count(), Order.objects.count(), Trade.objects.count()) == (2, 3, 4)


@pytest.mark.parametrize(("constraint", "overrides"), STRATEGY_CASES)
def test_strategy_check_constraints(constraint, overrides):
    assert_rejected_by(
        {constraint}, lambda: Strategy.objects.create(**strategy_fields(**overrides))
    )


def test_strategy_name_is_unique(strategy):
    assert_rejected_by(
        {"strategies_name_key"},
        lambda: Strategy.objects.create(**strategy_fields(name=strategy.name)),
    )


@pytest.mark.parametrize(("constraints", "overrides"), SIGNAL_CASES)
def test_signal_check_constraints(stock, strategy, constraints, overrides):
    assert_rejected_by(
        constraints, lambda: Signal.objects.create(**signal_fields(strategy, stock, **overrides))
    )


def test_one_signal_per_strategy_symbol_interval_and_candle(stock, strategy):
    Signal.objects.create(**signal_fields(strategy, stock))
    assert_rejected_by(
        {"signals_candle_uniq"},
        lambda: Signal.objects.create(**signal_fields(strategy, stock, action="SELL")),
    )
    # Another interval or candle is another signal.
    Signal.objects.create(**signal_fields(strategy, stock, interval="5m"))


@pytest.mark.parametrize(("constraints", "overrides"), ORDER_CASES)
def test_order_check_constraints(stock, constraints, overrides):
    assert_rejected_by(
        constraints, lambda: Order.objects.create(**order_fields(stock, **overrides))
    )


def test_client_order_id_is_unique(stock):
    Order.objects.create(**order_fields(stock))
    assert_rejected_by(
        {"orders_client_order_id_key"},
        lambda: Order.objects.create(**order_fields(stock, side="SELL")),
    )


def test_at_most_one_order_per_signal(stock, strategy):
    signal = Signal.objects.create(**signal_fields(strategy, stock))
    Order.objects.create(**order_fields(stock, signal=signal))
    assert_rejected_by(
        {"orders_signal_id_key"},
        lambda: Order.objects.create(**order_fields(stock, client_order_id="x", signal=signal)),
    )


def test_broker_order_id_is_unique_per_broker(stock):
    Order.objects.create(**order_fields(stock, broker_order_id="B1"))
    Order.objects.create(
        **order_fields(stock, client_order_id="kis-1", broker="kis", broker_order_id="B1")
    )
    assert_rejected_by(
        {"orders_broker_order_id_uniq"},
        lambda: Order.objects.create(
            **order_fields(stock, client_order_id="x", broker_order_id="B1")
        ),
    )


def test_order_transition_status_must_be_known(stock):
    order = Order.objects.create(**order_fields(stock))
    assert_rejected_by(
        {"order_transitions_to_status_valid"},
        lambda: OrderTransition.objects.create(
            order=order, from_status="NEW", to_status="LOST", at=order.created_at, actor="t"
        ),
    )
    assert_rejected_by(
        {"order_transitions_filled_quantity_check"},
        lambda: OrderTransition.objects.create(
            order=order, to_status="NEW", at=order.created_at, actor="t", filled_quantity=-1
        ),
    )


def test_account_constraints():
    Account.objects.create(broker="paper", cash=Decimal("1"), initial_cash=Decimal("1"))
    assert_rejected_by(
        {"accounts_initial_cash_gte_0"},
        lambda: Account.objects.create(broker="kis", cash=0, initial_cash=Decimal("-1")),
    )
    assert_rejected_by(
        {"accounts_broker_key"},
        lambda: Account.objects.create(broker="paper", cash=0, initial_cash=0),
    )


def test_a_fill_is_recorded_once_per_order_and_execution_id(stock):
    order = Order.objects.create(**order_fields(stock))
    other = Order.objects.create(**order_fields(stock, client_order_id="api-2"))
    Trade.objects.create(**trade_fields(stock, order=order, execution_id="E1"))
    Trade.objects.create(**trade_fields(stock, order=other, execution_id="E1"))
    assert_rejected_by(
        {"trades_order_execution_uniq"},
        lambda: Trade.objects.create(**trade_fields(stock, order=order, execution_id="E1")),
    )
    assert_rejected_by(
        {"trades_order_fill_has_execution_id"},
        lambda: Trade.objects.create(**trade_fields(stock, order=order, execution_id="")),
    )


UNIQUE_TESTED = {
    "strategy_performance_strategy_date_uniq",
    "signals_candle_uniq",
    "orders_broker_order_id_uniq",
    "trades_order_execution_uniq",
    "trades_order_fill_has_execution_id",
}
MODELS = (Trade, Position, StrategyPerformance, Strategy, Signal, Order, OrderTransition, Account)


def test_every_declared_constraint_is_tested_and_in_the_database():
    tested = {name for name, _ in TRADE_CASES + PERFORMANCE_CASES + STRATEGY_CASES}
    for case in POSITION_CASES + SIGNAL_CASES + ORDER_CASES:
        names, _ = getattr(case, "values", case)  # a pytest.param or a plain tuple
        tested |= set(names)
    tested |= UNIQUE_TESTED | {"order_transitions_to_status_valid", "accounts_initial_cash_gte_0"}
    with connection.cursor() as cursor:
        for model in MODELS:
            declared = {c.name for c in model._meta.constraints}
            assert declared <= tested, f"untested: {declared - tested}"
            in_db = connection.introspection.get_constraints(cursor, model._meta.db_table)
            assert declared <= set(in_db)
