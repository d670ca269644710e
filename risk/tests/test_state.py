"""The trading state: set (audited, events on commit), and what it does to orders through the
OMS with the paper broker: REDUCING lets a sell through and stops a buy; HALTED stops
everything but cancels, and cancels the open orders."""

import json
from decimal import Decimal

import pytest

from qbsite.tests.api_factories import make_stock
from risk import services
from risk.models import RiskAlert, TradingState, TradingStateChange
from risk.testing import limits_permissive
from trading import oms
from trading.models import OrderStatus
from trading.tests.oms_helpers import paper_account, put_quote

D = Decimal
S = OrderStatus
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def market(redis_client):
    make_stock("005930", market="KOSPI")
    paper_account("10000000")
    put_quote(redis_client, close=70000)
    limits_permissive()  # the state alone decides here
    services.limits_reset_cache()
    return redis_client


def place(cid, side="BUY", quantity=10, order_type="MARKET", limit_price=None):
    order, _ = oms.order_place(
        client_order_id=cid,
        symbol="005930",
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=limit_price,
        actor="test",
    )
    return order


def events(pubsub):
    out = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            out.append((message["channel"].decode(), json.loads(message["data"])))
    return out


def test_set_changes_records_and_publishes_once(market):
    pubsub = market.pubsub()
    pubsub.subscribe("events:trading_state_changed", "events:risk_alert")
    pubsub.get_message(timeout=1)
    pubsub.get_message(timeout=1)
    assert services.trading_state_set(state="REDUCING", actor="api:olivia", reason="drawdown")
    assert not services.trading_state_set(state="REDUCING", actor="api:olivia", reason="again")
    row = TradingState.objects.get()
    assert (row.state, row.reason, row.changed_by, row.automatic) == (
        "REDUCING",
        "drawdown",
        "api:olivia",
        False,
    )
    change = TradingStateChange.objects.get()
    assert (change.from_state, change.to_state, change.actor) == (
        "ACTIVE",
        "REDUCING",
        "api:olivia",
    )
    alert = RiskAlert.objects.get()
    assert alert.alert_type == "TRADING_STATE" and alert.severity == "WARNING"
    got = [e for e in events(pubsub) if e[1]["source"] == "risk"]
    assert [c for c, _ in got] == ["events:trading_state_changed", "events:risk_alert"]
    assert got[0][1]["data"]["state"] == "REDUCING" and got[0][1]["data"]["previous"] == "ACTIVE"
    assert got[1][1]["data"]["id"] == alert.pk


def test_bad_state_or_missing_actor_is_refused(market):
    with pytest.raises(services.RiskError, match="Unknown trading state 'PAUSED'"):
        services.trading_state_set(state="PAUSED", actor="x", reason="")
    with pytest.raises(services.RiskError, match="actor"):
        services.trading_state_set(state="HALTED", actor="", reason="")
    assert services.trading_state_get() == "ACTIVE"


def test_reducing_lets_a_sell_through_and_stops_a_buy(market):
    assert place("b1").status == S.FILLED
    services.trading_state_set(state="REDUCING", actor="test", reason="monthly loss")
    buy = place("b2")
    assert (buy.status, buy.reason_code) == (S.DENIED, "REDUCING_ONLY")
    assert "REDUCING" in buy.reason
    assert place("s1", side="SELL", quantity=5).status == S.FILLED


def test_halted_stops_everything_but_cancels(market):
    assert place("b1").status == S.FILLED
    resting = place("lim", order_type="LIMIT", limit_price=D(60000))  # below the market: rests
    assert resting.status == S.ACCEPTED
    services.trading_state_set(state="HALTED", actor="test", reason="daily loss")
    resting.refresh_from_db()
    assert resting.status == S.CANCELED  # halting cancels open orders
    assert "Trading halted" in resting.reason
    for cid, side in (("b2", "BUY"), ("s2", "SELL")):
        order = place(cid, side=side, quantity=5)
        assert (order.status, order.reason_code) == (S.DENIED, "TRADING_HALTED")


def test_a_cancel_passes_while_halted(market):
    resting = place("lim", order_type="LIMIT", limit_price=D(60000))
    # halt without the sweep reaching it first: set the row, as a concurrent halt would
    TradingState.objects.filter(pk=1).update(state="HALTED")
    canceled = oms.order_cancel(order_id=resting.pk, actor="test")
    assert canceled.status == S.CANCELED


def test_active_again_lets_buys_through(market):
    services.trading_state_set(state="HALTED", actor="test", reason="x")
    services.trading_state_set(state="ACTIVE", actor="test", reason="resume")
    assert place("b1").status == S.FILLED
    assert list(TradingStateChange.objects.order_by("id").values_list("to_state", flat=True)) == [
        "HALTED",
        "ACTIVE",
    ]
