"""strategy_performance on a hand-made day (trading/performance.py has the definitions).

Strategy "sma" (allocation 10,000,000) trades 005930 (KOSPI, 2026 rates):
  2026-11-24 10:00 KST  buy 10 @ 70,000: 700,000 + commission 105 -> cost 700,105
  2026-11-24 close      last candle 70,500: unrealized 705,000 - 700,105 = 4,895
  2026-11-25 01:00 KST  buy 5 @ 71,000 (commission 53): 15 for 1,055,158, marked 71,000:
                        unrealized 1,065,000 - 1,055,158 = 9,842; PnL 9,842 - 4,895 = 4,947
  2026-11-25 10:00 KST  sell 6 @ 69,000: commission 62, tax 207 + 621 = 828; cost removed
                        1,055,158 x 6/15 = 422,063.2; realized 414,000 - 890 - 422,063.2
                        = -8,953.2; 9 left for 633,094.8, marked 69,000: unrealized
                        -12,094.8; PnL -8,953.2 - 12,094.8 - 4,895 = -25,943
  2026-11-25 11:00 KST  sell 4 @ 72,000: commission 43, tax 144 + 432 = 576; cost removed
                        633,094.8 x 4/9 = 281,375.4667; realized 6,005.5333; 5 left for
                        351,719.3333; PnL -2,947.6667 + 8,280.6667 - 4,895 = 438
  2026-11-25 close      last candle 71,500: unrealized 357,500 - 351,719.3333 = 5,780.6667;
                        PnL -2,947.6667 + 5,780.6667 - 4,895 = -2,062
Cash-flow check of the day: start 10 x 70,500 = 705,000; end 5 x 71,500 = 357,500; paid
355,053, received 413,110 + 287,381: 357,500 + 700,491 - 355,053 - 705,000 = -2,062.
So on 2026-11-25: total_return -2,062 / 10,000,000 = -0.000206; trades 3; win rate 1/2;
max drawdown (4,947 - -25,943) / 10,000,000 = 0.003089.
On 2026-11-24: PnL 4,895 (0.0004895 -> 0.000490), drawdown 105 (the buy's commission).
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from qbsite.tests.api_factories import make_candle, make_stock
from trading import services
from trading.models import OrderStatus, Strategy, StrategyPerformance, Trade
from trading.performance import day_bounds, performance_compute, sharpe_ratio, strategy_day

pytestmark = pytest.mark.django_db
D = Decimal
DAY = date(2026, 11, 25)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def fill(strategy, side, quantity, price, at, cid):
    order, _ = services.order_create(
        client_order_id=cid, symbol="005930", side=side, order_type="MARKET",
        quantity=quantity, strategy=strategy, actor="test", at=at,
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    return services.order_apply_fill(
        order_id=order.pk, execution_id=cid, quantity=quantity, price=D(price), at=at
    )


@pytest.fixture
def day(db):
    make_stock("005930", market="KOSPI")
    services.account_ensure(broker="paper", initial_cash=D("100000000"))
    sma = Strategy.objects.create(
        name="sma", kind="sma_crossover", capital_allocation=D("10000000"), enabled=False
    )
    Strategy.objects.create(name="rsi", kind="rsi", capital_allocation=D("1000000"))
    Strategy.objects.create(name="macd", kind="macd", capital_allocation=D("5000000"), enabled=True)
    fill(sma, "BUY", 10, "70000", utc(2026, 11, 24, 1), "p1")
    make_candle("005930", time=utc(2026, 11, 24, 6, 29), close="70500")
    fill(sma, "BUY", 5, "71000", utc(2026, 11, 24, 16), "t1")  # 01:00 KST on the 25th
    fill(sma, "SELL", 6, "69000", utc(2026, 11, 25, 1), "t2")
    fill(sma, "SELL", 4, "72000", utc(2026, 11, 25, 2), "t3")
    make_candle("005930", time=utc(2026, 11, 25, 6, 29), close="71500")
    # The next Seoul day: neither its candle nor its trade belongs to the 25th.
    make_candle("005930", time=utc(2026, 11, 25, 15), close="99000")
    fill(sma, "BUY", 1, "99000", utc(2026, 11, 25, 15, 30), "next")
    # A busted trade of the day is not counted.
    Trade.objects.create(
        timestamp=utc(2026, 11, 25, 3), symbol_id="005930", side="SELL", quantity=1,
        price=D("50000"), order_type="MARKET", strategy="sma", status="CANCELED",
        profit_loss=D("-20000"),
    )  # fmt: skip
    return sma


def test_seoul_day_bounds():
    assert day_bounds(DAY) == (utc(2026, 11, 24, 15), utc(2026, 11, 25, 15))


def test_the_hand_made_day(day):
    figures = strategy_day(day, DAY)
    assert figures.pnl == D("-2062")
    assert figures.total_return == D("-0.000206")
    assert figures.trades_count == 3
    assert figures.win_rate == D("0.5")
    assert figures.max_drawdown == D("0.003089")
    assert figures.held_at_start


def test_the_day_before_marks_the_overnight_holding(day):
    figures = strategy_day(day, date(2026, 11, 24))
    assert (figures.pnl, figures.total_return) == (D("4895"), D("0.000490"))
    assert (figures.trades_count, figures.win_rate) == (1, None)
    assert figures.max_drawdown == D("0.000010")  # 105 / 10,000,000, half-even to 6 places


def test_rows_are_upserted_for_the_strategies_that_count(day):
    performance_compute(day=DAY)
    rows = {r.strategy: r for r in StrategyPerformance.objects.filter(date=DAY)}
    # rsi: disabled, no trades, nothing held -> no row; macd: enabled, idle -> a 0 row.
    assert set(rows) == {"sma", "macd"}
    sma = rows["sma"]
    assert (sma.total_return, sma.trades_count, sma.win_rate, sma.max_drawdown) == (
        D("-0.000206"), 3, D("0.5"), D("0.003089"),
    )  # fmt: skip
    assert sma.sharpe_ratio is None  # one day
    macd = rows["macd"]
    assert (macd.total_return, macd.trades_count, macd.win_rate, macd.max_drawdown) == (
        0, 0, None, 0,
    )  # fmt: skip

    # Again: the same rows, no duplicates; after a trade is busted, the row follows.
    performance_compute(day=DAY)
    assert StrategyPerformance.objects.filter(date=DAY).count() == 2
    Trade.objects.filter(execution_id="t3").update(status="CANCELED")
    performance_compute(day=DAY, strategy="sma")
    sma = StrategyPerformance.objects.get(strategy="sma", date=DAY)
    # Without the last sale 9 shares stay, marked 71,500: 643,500 - 633,094.8 = 10,405.2;
    # PnL -8,953.2 + 10,405.2 - 4,895 = -3,443.
    assert (sma.total_return, sma.trades_count, sma.win_rate) == (D("-0.000344"), 2, D("0"))


def test_sharpe_over_the_last_twenty_days(day):
    # 19 earlier days alternating +2 % and 0 (the 20th day back, -90 %, is out of the window),
    # then today's 0: ten 0.02 and ten 0; mean 0.01, sample deviation 0.01 x sqrt(20/19):
    # Sharpe = sqrt(19/20) x sqrt(252) = 15.472556.
    for back in range(1, 21):
        value = D("-0.9") if back == 20 else (D("0.02") if back % 2 else D(0))
        StrategyPerformance.objects.create(
            strategy="macd", date=DAY - timedelta(days=back), total_return=value
        )
    performance_compute(day=DAY, strategy="macd")
    assert StrategyPerformance.objects.get(strategy="macd", date=DAY).sharpe_ratio == D("15.472556")


def test_sharpe_is_undefined_on_few_days_or_no_variation():
    assert sharpe_ratio([D("0.01")] * 4) is None
    assert sharpe_ratio([D("0.01")] * 5) is None
    # 0.02, 0, 0.02, 0, 0: mean 0.008, variance 1.2e-4 -> 0.008 x sqrt(252 / 1.2e-4).
    assert sharpe_ratio([D("0.02"), 0, D("0.02"), 0, 0]) == D("11.593101")


def test_a_loss_beyond_the_allocation_is_clipped(day, caplog):
    day.capital_allocation = D("1000")
    day.save()
    figures = strategy_day(day, DAY)
    assert (figures.total_return, figures.max_drawdown) == (D(-1), D(1))
    assert "more than its allocation" in caplog.text


def test_the_command(day):
    out = StringIO()
    call_command("strategy_performance", "--date", "2026-11-25", "--strategy", "sma", stdout=out)
    assert out.getvalue().splitlines() == [
        "2026-11-25 sma: return -0.0206%, trades 3, win rate 50.0000%, "
        "max drawdown 0.3089%, Sharpe -",
        "1 strategy row(s) stored for 2026-11-25.",
    ]
    with pytest.raises(CommandError, match="No strategy named 'nope'"):
        call_command("strategy_performance", "--strategy", "nope")
    with pytest.raises(CommandError, match="'25/11/2026' is not a date"):
        call_command("strategy_performance", "--date", "25/11/2026")
