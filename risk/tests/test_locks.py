"""Risk locks: created and removed through the services, and LOCKED in the order path."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from qbsite.exceptions import NotFound
from qbsite.tests.api_factories import make_stock
from risk import selectors, services
from risk.testing import limits_permissive
from trading import oms
from trading.models import OrderStatus
from trading.tests.oms_helpers import make_strategy, paper_account, put_quote

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def market(redis_client):
    make_stock("005930", market="KOSPI")
    make_stock("000660", market="KOSPI")
    paper_account("10000000")
    put_quote(redis_client, close=70000)
    put_quote(redis_client, symbol="000660", close=70000)
    limits_permissive()
    return redis_client


def place(cid, symbol="005930", side="BUY", strategy=None):
    order, _ = oms.order_place(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type="MARKET",
        quantity=10,
        strategy=strategy,
        actor="test",
    )
    return order


def soon(minutes=30):
    return timezone.now() + dt.timedelta(minutes=minutes)


def test_create_validates(market):
    with pytest.raises(services.RiskError, match="Unknown lock kind"):
        services.lock_create(kind="FOREVER", until=soon(), reason="", actor="t")
    with pytest.raises(services.RiskError, match="after now"):
        services.lock_create(kind="MANUAL", until=timezone.now(), reason="", actor="t")
    with pytest.raises(services.RiskError, match="timezone-aware"):
        services.lock_create(kind="MANUAL", until=dt.datetime(2030, 1, 1), reason="", actor="t")
    with pytest.raises(NotFound, match="999999"):
        services.lock_create(kind="MANUAL", until=soon(), reason="", actor="t", symbol="999999")


def test_a_symbol_lock_denies_its_buys_with_reason_and_until(market):
    lock = services.lock_create(
        kind="COOLDOWN",
        until=soon(),
        reason="stop-loss at -3 %",
        actor="engine:risk",
        symbol="005930",
    )
    order = place("a")
    assert (order.status, order.reason_code) == (OrderStatus.DENIED, "LOCKED")
    assert "stop-loss at -3 %" in order.reason and "COOLDOWN" in order.reason
    assert place("b", symbol="000660").status == OrderStatus.FILLED
    assert list(selectors.locks_active(timezone.now(), symbol="005930")) == [lock]
    assert list(selectors.locks_active(timezone.now(), symbol="000660")) == []


def test_a_cooldown_lets_the_exit_through(market):
    assert place("buy").status == OrderStatus.FILLED
    services.lock_create(kind="COOLDOWN", until=soon(), reason="", actor="t", symbol="005930")
    assert place("sell", side="SELL").status == OrderStatus.FILLED


def test_a_strategy_lock_covers_only_that_strategy(market):
    mine, other = make_strategy("mine"), make_strategy("other")
    services.lock_create(
        kind="STOPLOSS_GUARD", until=soon(), reason="3 stops", actor="t", strategy=mine
    )
    assert place("a", strategy=mine).reason_code == "LOCKED"
    assert place("b", strategy=other).status == OrderStatus.FILLED
    assert place("c").status == OrderStatus.FILLED  # manual


def test_removed_or_expired_locks_stop_nothing(market):
    lock = services.lock_create(kind="MANUAL", until=soon(), reason="", actor="t")
    assert place("a").reason_code == "LOCKED"
    removed = services.lock_remove(lock_id=lock.pk, actor="admin:olivia")
    assert removed.removed_by == "admin:olivia" and removed.removed_at is not None
    again = services.lock_remove(lock_id=lock.pk, actor="someone-else")
    assert again.removed_by == "admin:olivia"
    assert place("b").status == OrderStatus.FILLED
    with pytest.raises(NotFound):
        services.lock_remove(lock_id=999999, actor="t")
