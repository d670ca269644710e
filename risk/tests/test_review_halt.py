"""Review: a halt whose on-commit cancels never ran (a crash) still cancels the open orders:
the risk engine's check sweeps them while the state is HALTED."""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from qbsite.tests.api_factories import make_stock
from risk import services
from risk.engines import RiskEngine
from risk.models import TradingState
from risk.testing import limits_permissive
from trading import oms
from trading.models import OrderStatus
from trading.tests.oms_helpers import paper_account, put_quote

D = Decimal
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def market(redis_client):
    make_stock("005930", market="KOSPI")
    paper_account("10000000")
    put_quote(redis_client, close=70000)
    limits_permissive()
    services.limits_reset_cache()
    return redis_client


async def test_the_engine_cancels_what_a_halt_left_open(market):
    """A halt whose on-commit cancels never ran (the process died right after the commit, or
    a cancel request failed) leaves an order the broker may still fill: the risk engine's next
    check cancels it."""

    def setup():
        order, _ = oms.order_place(
            client_order_id="lim", symbol="005930", side="BUY", order_type="LIMIT",
            quantity=10, limit_price=D(60000), actor="test",
        )  # fmt: skip
        assert order.status == OrderStatus.ACCEPTED  # below the market: it rests
        TradingState.objects.filter(pk=1).update(state="HALTED", changed_by="admin:olivia")
        return order

    resting = await sync_to_async(setup)()
    engine = RiskEngine()
    await engine.setup()
    try:
        await engine.check()
        await sync_to_async(resting.refresh_from_db)()
        assert resting.status == OrderStatus.CANCELED
        assert "Trading halted" in resting.reason
        await engine.check()  # nothing left to cancel: no error, nothing changes
    finally:
        await engine.stop()
        await sync_to_async(connections.close_all)()
