"""Fixtures of the KIS broker tests: settings aimed at the fake KIS server (kis.testing), the
broker's runtime closed after each test, a stock with a fresh quote, and small helpers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kis import testing as kis_testing
from qbsite.tests.api_factories import make_stock
from trading import oms
from trading.brokers import get_broker
from trading.brokers.kis import close_runtime
from trading.models import Order
from trading.tests.oms_helpers import put_quote

D = Decimal
fake_kis = kis_testing.fake_kis
kis_settings = kis_testing.kis_settings


@pytest.fixture
def kis_world(kis_settings, fake_kis, redis_client):
    """TRADING_BROKER=kis on the fake, 005930 at 70,000 (ours and KIS's), no sync yet."""
    kis_settings.TRADING_BROKER = "kis"
    make_stock("005930", market="KOSPI")
    make_stock("000660", name="SK hynix", market="KOSPI")
    put_quote(redis_client, "005930", close=70000)
    put_quote(redis_client, "000660", close=100000, prev_close=100000)
    fake_kis.state.set_price("005930", 70000)
    fake_kis.state.set_price("000660", 100000)
    yield fake_kis
    close_runtime()


def place(client_order_id="o-1", *, side="BUY", order_type="LIMIT", quantity=10, price="70000"):
    order, _ = oms.order_place(
        client_order_id=client_order_id,
        symbol="005930",
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=D(price) if order_type == "LIMIT" else None,
        actor="test",
    )
    return Order.objects.get(pk=order.pk)


def odno(order) -> str:
    return order.broker_order_id.rpartition("-")[2]


def reconciled():
    """A first reconciliation on an empty account (creates the kis account from KIS's cash)."""
    from trading.broker_sync import broker_reconcile

    report = broker_reconcile()
    assert report.agreed, report.lines()
    return report


def kis():
    return get_broker("kis")
