"""PostgreSQL itself rejects bad trades, positions and strategy_performance rows
(full_clean bypassed)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from marketdata.models import Stock
from trading.models import Position, StrategyPerformance, Trade

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


def test_every_declared_constraint_is_tested_and_in_the_database():
    tested = {name for name, _ in TRADE_CASES + PERFORMANCE_CASES}
    tested |= {name for names, _ in POSITION_CASES for name in names}
    tested.add("strategy_performance_strategy_date_uniq")
    with connection.cursor() as cursor:
        for model in (Trade, Position, StrategyPerformance):
            declared = {c.name for c in model._meta.constraints}
            assert declared <= tested, f"untested: {declared - tested}"
            in_db = connection.introspection.get_constraints(cursor, model._meta.db_table)
            assert declared <= set(in_db)
