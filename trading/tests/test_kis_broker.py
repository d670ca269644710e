"""The KIS broker (trading/brokers/kis.py) through the OMS, against the fake KIS server's
socket: buys and sells (limit, market), rejects, partial fills, cancels, idempotent submits
after a crash or an ambiguous failure, the refusal to trade while unreconciled, and the
interface's reads."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from kis import config as kc
from trading import broker_sync, oms
from trading.brokers import BrokerError
from trading.brokers.kis import KISBroker, split_broker_order_id
from trading.models import BrokerSync, Order, OrderStatus, Position
from trading.tests import kis_fixtures
from trading.tests.kis_fixtures import kis, odno, place, reconciled
from trading.tests.oms_helpers import assert_ledger_consistent

fake_kis = kis_fixtures.fake_kis
kis_settings = kis_fixtures.kis_settings
kis_world = kis_fixtures.kis_world
D = Decimal
S = OrderStatus
pytestmark = pytest.mark.django_db


def refresh():
    return broker_sync.kis_refresh()


def test_get_broker_gives_the_kis_broker(kis_world):
    assert isinstance(kis(), KISBroker)
    assert kis().name == "kis"


def test_limit_buy_is_accepted_with_orgno_and_odno(kis_world):
    reconciled()
    order = place()
    assert order.status == S.ACCEPTED
    org_no, order_no = split_broker_order_id(order.broker_order_id)
    fake = kis_world.state.orders[order_no]
    assert org_no == kis_world.state.branch
    assert (fake.side, fake.symbol, fake.quantity, fake.price, fake.ord_dvsn) == (
        "buy", "005930", 10, D(70000), "00",
    )  # fmt: skip


def test_market_buy_then_market_sell_fill_through_polling(kis_world):
    reconciled()
    buy = place("b-1", order_type="MARKET", quantity=5)
    assert kis_world.state.orders[odno(buy)].ord_dvsn == "01"
    assert kis_world.state.orders[odno(buy)].price == 0
    kis_world.state.fill(odno(buy), 5, 70100)
    result = refresh()
    buy.refresh_from_db()
    assert buy.status == S.FILLED and buy.average_fill_price == D(70100)
    assert result.open_orders == 0
    assert Position.objects.get(symbol_id="005930").quantity == 5

    sell = place("s-1", side="SELL", order_type="MARKET", quantity=5)
    fake = kis_world.state.orders[odno(sell)]
    assert (fake.side, fake.ord_dvsn) == ("sell", "01")
    kis_world.state.fill(odno(sell), 5, 70500)
    refresh()
    sell.refresh_from_db()
    assert sell.status == S.FILLED
    assert Position.objects.get(symbol_id="005930").quantity == 0
    assert_ledger_consistent("kis")


def test_limit_sell_is_sent_as_a_limit(kis_world):
    reconciled()
    buy = place("b-1", quantity=3)
    kis_world.state.fill(odno(buy), 3)
    refresh()
    sell = place("s-1", side="SELL", quantity=3, price="71000")
    fake = kis_world.state.orders[odno(sell)]
    assert (fake.side, fake.price, fake.ord_dvsn) == ("sell", D(71000), "00")


def test_kis_refusal_rejects_with_msg_cd_and_msg1(kis_world):
    reconciled()
    kis_world.state.cash = D(1000)  # KIS: not enough cash (APBK0952)
    order = place()
    assert order.status == S.REJECTED
    assert order.reason_code == "APBK0952"
    assert order.reason == "주문가능금액을 초과 했습니다"
    assert kis_world.state.orders == {}


def test_partial_fills_apply_each_kis_total_once(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 3, 70000)
    refresh()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (S.PARTIALLY_FILLED, 3)
    kis_world.state.fill(odno(order), 4, 69900)
    refresh()
    refresh()  # the same totals again: nothing more
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (S.PARTIALLY_FILLED, 7)
    fills = list(order.fills.order_by("id").values_list("execution_id", "quantity", "price"))
    assert fills == [
        (f"{odno(order)}-3", 3, D(70000)),
        (f"{odno(order)}-7", 4, D(69900)),
    ]
    kis_world.state.fill(odno(order), 3, 70000)
    refresh()
    order.refresh_from_db()
    assert order.status == S.FILLED
    assert_ledger_consistent("kis")


def test_merged_executions_fill_at_their_average(kis_world):
    reconciled()
    order = place(quantity=4)
    kis_world.state.fill(odno(order), 1, 70000)
    kis_world.state.fill(odno(order), 3, 69000)
    refresh()
    order.refresh_from_db()
    assert order.filled_quantity == 4
    assert order.fills.get().price == D("69250.00")


def test_cancel_applies_the_fills_made_before_it(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 3)  # not yet seen here
    order = oms.order_cancel(order_id=order.pk, actor="test")
    assert order.status == S.CANCELED
    assert order.filled_quantity == 3
    assert kis_world.state.orders[odno(order)].cancelled == 7
    assert_ledger_consistent("kis")


def test_cancel_refused_by_kis_when_all_filled(kis_world):
    reconciled()
    order = place(quantity=2)
    kis_world.state.fill(odno(order), 2)
    order = oms.order_cancel(order_id=order.pk, actor="test")
    order.refresh_from_db()
    assert order.status == S.FILLED  # the fills applied; KIS refused the cancel (nothing left)
    assert order.transitions.filter(to_status=S.CANCEL_PENDING).exists()


def test_resubmit_with_a_known_id_sends_nothing(kis_world):
    reconciled()
    order = place()
    again = kis().submit(order)
    assert again.accepted and again.broker_order_id == order.broker_order_id
    assert len(kis_world.state.orders) == 1


def test_crash_after_kis_placed_it_finds_the_order_instead_of_resending(kis_world, redis_client):
    """Placed at KIS, then the process died before storing the id (and Redis lost the id):
    recovery finds the order by its terms and adopts it."""
    reconciled()
    order = place()
    bid = order.broker_order_id
    # Undo what we knew: the order back to SUBMITTED with no id, the id memo gone.
    Order.objects.filter(pk=order.pk).update(status=S.SUBMITTED, broker_order_id="")
    redis_client.delete("kis:order-id:o-1")
    order.refresh_from_db()
    oms.recover()
    order.refresh_from_db()
    assert order.status == S.ACCEPTED
    assert order.broker_order_id == bid
    assert len(kis_world.state.orders) == 1


def test_ambiguous_failure_leaves_it_submitted_then_recovery_sends_once(kis_world):
    reconciled()
    kis_world.state.fail_next(1, status=500, path=kc.PATH_ORDER_CASH)
    order = place()
    assert order.status == S.SUBMITTED  # KIS may have it: not resent blindly
    assert kis_world.state.orders == {}
    oms.recover()
    order.refresh_from_db()
    assert order.status == S.ACCEPTED
    assert len(kis_world.state.orders) == 1
    oms.recover()  # nothing SUBMITTED any more: still one order at KIS
    assert len(kis_world.state.orders) == 1


def test_unreachable_kis_raises_broker_error_on_reads(kis_world):
    kis_world.state.fail_next(20, status=500, path=kc.PATH_BALANCE)
    with pytest.raises(BrokerError, match="balance"):
        kis().positions()


def test_no_new_order_before_a_reconciliation(kis_world):
    order = place()
    assert order.status == S.REJECTED
    assert order.reason_code == "BROKER_UNRECONCILED"
    assert "No reconciliation with kis yet" in order.reason
    assert kis_world.state.orders == {}


def test_refused_while_disagreeing_until_an_operator_overrides(kis_world, operator):
    kis_world.state.set_position("000660", 10, 100000)  # held at KIS, not here
    report = broker_sync.broker_reconcile()
    assert not report.agreed
    order = place("o-1")
    assert order.status == S.REJECTED and order.reason_code == "BROKER_UNRECONCILED"
    assert "position 000660" in order.reason and "disagrees" in order.reason
    broker_sync.sync_override(broker="kis", user=operator, note="HTS holding, known")
    row = BrokerSync.objects.get(broker="kis")
    assert row.override_by == operator and row.override_at is not None
    assert place("o-2").status == S.ACCEPTED
    # The next reconciliation decides again (the override ends with it).
    broker_sync.broker_reconcile()
    assert place("o-3").status == S.REJECTED


def test_reads_open_orders_fills_positions_balance(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 4, 70000)
    broker = kis()
    [open_order] = broker.open_orders()
    assert open_order.broker_order_id == order.broker_order_id
    assert open_order.client_order_id == "o-1"
    assert (open_order.quantity, open_order.filled_quantity) == (10, 4)
    assert open_order.status == "PARTIALLY_FILLED"
    [fill] = broker.fills(since=timezone.now())
    assert (fill.execution_id, fill.quantity, fill.price) == (f"{odno(order)}-4", 4, D(70000))
    [position] = broker.positions()
    assert (position.symbol, position.quantity, position.average_price) == ("005930", 4, 70000)
    assert broker.balance().cash == D(100_000_000) - 4 * D(70000)


def test_virtual_account_open_orders_come_from_daily_fills(kis_world, kis_settings):
    kis_settings.KIS_ENV = "virtual"
    kis_settings.KIS_RATE_LIMIT_PER_SECOND = 50
    kis_world.state.rate_limit = None
    reconciled()
    # The fake takes the virtual TR ids for orders; inquire-psbl-rvsecncl it refuses (as KIS).
    order = place()
    [open_order] = kis().open_orders()
    assert open_order.broker_order_id == order.broker_order_id
