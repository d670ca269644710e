"""manage.py reconcile: positions and cash against a hand-computed ledger, then corrupted.

The ledger (Wednesday 2026-11-25, KRX 2026 rates: commission 0.015 % truncated to the won;
KOSPI sell tax 0.05 % + 0.15 % each truncated, KOSDAQ 0.20 %):

005930 (KOSPI)
  buy 10 @ 70,000   700,000   commission 105
  buy  5 @ 71,000   355,000   commission 53 (53.25)
  buy  7 @ 69,500 in two fills of one order:
       3 -> 208,500 commission 31 (31.275); 4 -> 278,000 commission 41 (41.7)
  => 22 shares, average 1,541,500 / 22 = 70,068.1818, cost basis 1,541,500 + 230 = 1,541,730
  sell 8 @ 72,000   576,000   commission 86 (86.4), tax 288 + 864 = 1,152
       cost removed 1,541,730 x 8/22 = 560,629.0909; realized 574,762 - 560,629.0909
       = 14,132.9091; cost left 981,100.9091 for 14
  sell 4 @ 68,000   272,000   commission 40 (40.8), tax 136 + 408 = 544
       cost removed 981,100.9091 x 4/14 = 280,314.5455; realized 271,416 - 280,314.5455
       = -8,898.5455; cost left 700,786.3636 for 10
  => realized 5,234.3636; marked at 71,000: unrealized 710,000 - 700,786.3636 = 9,213.6364
035720 (KOSDAQ)
  buy 100 @ 10,000  1,000,000 commission 150; sell 100 @ 10,500 1,050,000 commission 157,
  tax 2,100: realized 1,047,743 - 1,000,150 = 47,593, flat.
Cash: 10,000,000 - 1,541,730 + 574,762 + 271,416 - 1,000,150 + 1,047,743 = 9,352,041.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from qbsite.tests.api_factories import make_stock
from trading import reconcile, services
from trading.brokers.base import BrokerPosition
from trading.models import Account, OrderStatus, Position, Trade
from trading.reconcile import Difference

D = Decimal
T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 10:00 in Seoul


def _order(symbol, side, quantity, cid):
    order, _ = services.order_create(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type="MARKET",
        quantity=quantity,
        actor="test",
        at=T,
    )
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    return order


def _filled(symbol, side, quantity, price, cid, fills=None):
    order = _order(symbol, side, quantity, cid)
    for i, part in enumerate(fills or [quantity]):
        services.order_apply_fill(
            order_id=order.pk, execution_id=f"{cid}-{i}", quantity=part, price=D(price), at=T
        )
    return order


@pytest.fixture
def ledger(db):
    make_stock("005930", market="KOSPI")
    make_stock("035720", name="Kakao", market="KOSDAQ")
    services.account_ensure(broker="paper", initial_cash=D("10000000"))
    _filled("005930", "BUY", 10, "70000", "b1")
    _filled("005930", "BUY", 5, "71000", "b2")
    _filled("005930", "BUY", 7, "69500", "b3", fills=[3, 4])
    _filled("005930", "SELL", 8, "72000", "s1")
    _filled("005930", "SELL", 4, "68000", "s2")
    _filled("035720", "BUY", 100, "10000", "k1")
    _filled("035720", "SELL", 100, "10500", "k2")
    services.position_mark(symbol="005930", price=D("71000"))


def run(*args) -> tuple[str, CommandError | None]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("reconcile", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_the_ledger_is_the_hand_computed_one_and_reconciles(ledger):
    samsung = Position.objects.get(symbol="005930")
    assert (samsung.quantity, samsung.average_price) == (10, D("70068.1818"))
    assert (samsung.cost_basis, samsung.realized_pnl) == (D("700786.3636"), D("5234.3636"))
    assert samsung.unrealized_pnl == D("9213.6364")
    kakao = Position.objects.get(symbol="035720")
    assert (kakao.quantity, kakao.cost_basis, kakao.realized_pnl) == (0, 0, D("47593"))
    sells = Trade.objects.filter(side="SELL").order_by("id")
    assert [t.profit_loss for t in sells] == [D("14132.9091"), D("-8898.5455"), D("47593")]
    assert Account.objects.get(broker="paper").cash == D("9352041")

    assert reconcile.differences() == []
    out, error = run()
    assert error is None
    assert out == "Positions and cash equal their trades.\n"


def test_a_corrupted_position_is_reported_field_by_field_with_exact_numbers(ledger):
    Position.objects.filter(symbol="005930").update(
        quantity=11, cost_basis=D("770854.8636"), realized_pnl=D("5234.3600")
    )
    out, error = run()
    # The stored unrealized PnL (9,213.6364 = 71,000 x 10 - 700,786.3636) agrees with the
    # ledger's quantity and cost, so it is not reported.
    assert out.splitlines() == [
        "position 005930 quantity: stored 11, expected 10",
        "position 005930 cost_basis: stored 770854.8636, expected 700786.3636",
        "position 005930 realized_pnl: stored 5234.3600, expected 5234.3636",
    ]
    assert str(error) == "3 difference(s) between the ledger and the stored rows."
    assert error.returncode == 1


def test_unrealized_pnl_follows_the_stored_price(ledger):
    Position.objects.filter(symbol="005930").update(unrealized_pnl=D("9000"))
    assert [str(d) for d in reconcile.differences()] == [
        "position 005930 unrealized_pnl: stored 9000.0000, expected 9213.6364"
    ]


def test_cash_and_a_sells_profit_loss_are_checked(ledger):
    Account.objects.filter(broker="paper").update(cash=D("9352042"))
    sell = Trade.objects.get(execution_id="s2-0")
    Trade.objects.filter(pk=sell.pk).update(profit_loss=D("-8898"))
    found = reconcile.differences()
    assert found == [
        Difference("trade", f"005930 #{sell.pk}", "profit_loss", D("-8898"), D("-8898.5455")),
        Difference("account", "paper", "cash", D("9352042"), D("9352041")),
    ]
    out, error = run()
    assert out.splitlines() == [
        f"trade 005930 #{sell.pk} profit_loss: stored -8898.0000, expected -8898.5455",
        "account paper cash: stored 9352042.0000, expected 9352041.0000",
    ]
    assert error is not None


def test_canceled_trades_are_left_out_and_order_less_trades_count_for_the_default_broker(
    ledger, settings
):
    settings.TRADING_BROKER = "paper"
    Trade.objects.create(
        timestamp=T, symbol_id="005930", side="BUY", quantity=1000, price=D("70000"),
        commission=D(10500), order_type="MARKET", status="CANCELED",
    )  # fmt: skip
    assert reconcile.differences() == []
    # A trade recorded by hand (no order) that nobody applied: position and cash both differ.
    Trade.objects.create(
        timestamp=T, symbol_id="035720", side="BUY", quantity=3, price=D("10000"),
        commission=D(4), order_type="MARKET",
    )  # fmt: skip
    assert [str(d) for d in reconcile.differences()] == [
        "position 035720 quantity: stored 0, expected 3",
        "position 035720 average_price: stored 0.0000, expected 10000.0000",
        "position 035720 cost_basis: stored 0.0000, expected 30004.0000",
        "account paper cash: stored 9352041.0000, expected 9322037.0000",
    ]


def test_a_missing_position_row_and_a_sell_of_more_than_held(ledger):
    Position.objects.filter(symbol="035720").delete()
    assert [str(d) for d in reconcile.differences(["035720"])] == [
        "position 035720 row: stored none, expected present (no positions row)"
    ]
    oversold = Trade.objects.create(
        timestamp=T, symbol_id="005930", side="SELL", quantity=11, price=D("70000"),
        order_type="MARKET", profit_loss=D(0),
    )  # fmt: skip
    [first, *_] = reconcile.differences(["005930"])
    assert first.kind == "trade" and first.key == f"005930 #{oversold.pk}"
    assert (first.field, first.stored, first.expected) == ("quantity", 11, 10)
    assert "exceeds the 10 held" in first.note


def test_symbol_option_limits_the_check_and_is_validated(ledger):
    Position.objects.filter(symbol="005930").update(quantity=11, cost_basis=D("770854.8636"))
    assert run("--symbol", "035720") == ("Positions and cash equal their trades.\n", None)
    with pytest.raises(CommandError, match="'5930' is not a KRX symbol"):
        call_command("reconcile", "--symbol", "5930")


def test_fix_rewrites_positions_and_cash_from_the_trades(ledger):
    Position.objects.filter(symbol="005930").update(
        quantity=12, average_price=D("70000"), cost_basis=D("1"), realized_pnl=D("0"),
        unrealized_pnl=D("0"),
    )  # fmt: skip
    Position.objects.filter(symbol="035720").delete()
    Account.objects.filter(broker="paper").update(cash=D("1"))
    out, error = run("--fix")
    assert error is None, out
    lines = out.splitlines()
    assert "fixed: account paper cash: stored 1.0000, expected 9352041.0000" in lines
    assert "fixed: position 005930 quantity: stored 12, expected 10" in lines
    assert lines[-1] == "Positions and cash equal their trades."
    samsung = Position.objects.get(symbol="005930")
    assert (samsung.quantity, samsung.average_price, samsung.cost_basis) == (
        10, D("70068.1818"), D("700786.3636"),
    )  # fmt: skip
    assert (samsung.realized_pnl, samsung.unrealized_pnl) == (D("5234.3636"), D("9213.6364"))
    assert Position.objects.get(symbol="035720").realized_pnl == D("47593")
    assert Account.objects.get(broker="paper").cash == D("9352041")
    assert reconcile.differences() == []


def test_fix_never_rewrites_trades_and_still_fails_for_them(ledger):
    sell = Trade.objects.get(execution_id="s1-0")
    Trade.objects.filter(pk=sell.pk).update(profit_loss=D("1"))
    out, error = run("--fix")
    assert error is not None
    assert out.splitlines() == [
        f"trade 005930 #{sell.pk} profit_loss: stored 1.0000, expected 14132.9091",
        f"still: trade 005930 #{sell.pk} profit_loss: stored 1.0000, expected 14132.9091",
    ]
    sell.refresh_from_db()
    assert sell.profit_loss == D("1")


def test_against_the_brokers_figures(ledger):
    def held(symbol, quantity, average="70068"):
        return BrokerPosition(symbol=symbol, quantity=quantity, average_price=D(average))

    assert (
        reconcile.broker_differences(
            broker="paper", positions=[held("005930", 10)], cash=D("9352041")
        )
        == []
    )
    found = reconcile.broker_differences(
        broker="paper", positions=[held("005930", 9), held("000660", 1)], cash=D("9352000")
    )
    assert [str(d) for d in found] == [
        "broker 000660 quantity: stored 0, expected 1",
        "broker 005930 quantity: stored 10, expected 9",
        "broker paper cash: stored 9352041.0000, expected 9352000.0000",
    ]
    [price] = reconcile.broker_differences(broker="paper", positions=[held("005930", 10, "70100")])
    assert (price.field, price.stored, price.expected) == ("average_price", 70068, 70100)


def test_the_paper_broker_agrees_and_an_unknown_broker_is_an_error(ledger, settings):
    assert run("--broker") == ("Positions and cash equal their trades.\n", None)
    settings.TRADING_BROKER = "nowhere"
    with pytest.raises(CommandError, match="Unknown broker 'nowhere'"):
        call_command("reconcile", "--broker")
