"""The order state machine: every pair of statuses, legal or not, in memory and in the database."""

import itertools
from datetime import UTC, datetime

import pytest

from qbsite.tests.api_factories import make_stock
from trading import services
from trading.models import Order, OrderStatus, OrderTransition
from trading.states import (
    CANCELABLE,
    FINAL,
    OPEN,
    TRANSITIONS,
    IllegalTransition,
    check_transition,
    is_final,
)

S = OrderStatus
# Written out again on purpose: the table in trading/states.py is checked against this list, so
# a change to the machine is a change to two places, one of them a test.
LEGAL = {
    (S.NEW, S.SUBMITTED),
    (S.NEW, S.DENIED),
    (S.NEW, S.CANCELED),
    (S.SUBMITTED, S.ACCEPTED),
    (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.PARTIALLY_FILLED),
    (S.SUBMITTED, S.FILLED),
    (S.SUBMITTED, S.CANCEL_PENDING),
    (S.SUBMITTED, S.CANCELED),
    (S.SUBMITTED, S.EXPIRED),
    (S.ACCEPTED, S.PARTIALLY_FILLED),
    (S.ACCEPTED, S.FILLED),
    (S.ACCEPTED, S.CANCEL_PENDING),
    (S.ACCEPTED, S.CANCELED),
    (S.ACCEPTED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCEL_PENDING),
    (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
    (S.CANCEL_PENDING, S.CANCELED),
    (S.CANCEL_PENDING, S.PARTIALLY_FILLED),
    (S.CANCEL_PENDING, S.FILLED),
    (S.CANCEL_PENDING, S.EXPIRED),
    (S.CANCEL_PENDING, S.ACCEPTED),
}
ALL_PAIRS = list(itertools.product(S.values, repeat=2))
T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def test_the_table_is_exactly_the_documented_machine():
    table = {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts}
    assert table == {(str(a), str(b)) for a, b in LEGAL}
    assert set(TRANSITIONS) == set(S.values)


def test_final_open_and_cancelable_sets():
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.DENIED, S.EXPIRED} == FINAL
    assert {S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING} == OPEN
    assert {S.NEW, S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED} == CANCELABLE
    assert all(is_final(status) for status in FINAL)
    assert not any(is_final(status) for status in OPEN | {S.NEW})


@pytest.mark.parametrize(("from_status", "to_status"), ALL_PAIRS)
def test_every_pair_is_allowed_or_refused_with_a_message(from_status, to_status):
    if (from_status, to_status) in LEGAL:
        check_transition(from_status, to_status)
        return
    with pytest.raises(IllegalTransition) as info:
        check_transition(from_status, to_status, order="Order X-1")
    message = info.value.message
    assert f"Order X-1 cannot go from {from_status} to {to_status}" in message
    assert info.value.status_code == 409


def test_unknown_statuses_are_refused():
    with pytest.raises(IllegalTransition, match="unknown status 'LOST'"):
        check_transition("LOST", S.FILLED)
    with pytest.raises(IllegalTransition, match="'DONE' is not an order status"):
        check_transition(S.NEW, "DONE")


def _order(status: str, *, full: bool = False) -> Order:
    stock = make_stock()
    order, _ = services.order_create(
        client_order_id=f"c-{status}",
        symbol=stock.symbol,
        side="BUY",
        order_type="LIMIT",
        quantity=10,
        limit_price="70000",
        actor="test",
        at=T,
    )
    # Put the order in `status` directly: the machine is what is under test, not the path.
    # `full`: all 10 shares filled already, as FILLED requires (the CHECK orders_filled_means_all).
    full = full or status == S.FILLED
    Order.objects.filter(pk=order.pk).update(
        status=status, filled_quantity=10 if full else 0, average_fill_price=70000 if full else None
    )
    return order


@pytest.mark.django_db
@pytest.mark.parametrize(("from_status", "to_status"), ALL_PAIRS)
def test_order_set_status_records_legal_moves_and_changes_nothing_on_illegal_ones(
    from_status, to_status
):
    order = _order(from_status, full=to_status == S.FILLED)
    before = OrderTransition.objects.filter(order=order).count()
    if (from_status, to_status) in LEGAL:
        services.order_set_status(order_id=order.pk, to_status=to_status, actor="test", at=T)
        order.refresh_from_db()
        assert order.status == to_status
        last = OrderTransition.objects.filter(order=order).last()
        assert (last.from_status, last.to_status, last.actor) == (from_status, to_status, "test")
        assert (order.closed_at is not None) == is_final(to_status)
    else:
        with pytest.raises(IllegalTransition):
            services.order_set_status(order_id=order.pk, to_status=to_status, actor="test", at=T)
        order.refresh_from_db()
        assert order.status == from_status
        assert OrderTransition.objects.filter(order=order).count() == before


@pytest.mark.django_db(transaction=True)
def test_transition_outside_a_transaction_is_a_programming_error():
    order = _order(S.NEW)
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic"):
        services.order_transition(order, S.SUBMITTED, actor="test")
