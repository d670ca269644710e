"""`manage.py reconcile --broker kis` and the admin's override of a disagreeing
reconciliation, against the fake KIS server."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from trading import broker_sync
from trading.models import BrokerSync, BrokerSyncStatus, OrderStatus
from trading.tests import kis_fixtures
from trading.tests.kis_fixtures import odno, place, reconciled

fake_kis = kis_fixtures.fake_kis
kis_settings = kis_fixtures.kis_settings
kis_world = kis_fixtures.kis_world
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(*args) -> str:
    out = StringIO()
    call_command("reconcile", *args, stdout=out)
    return out.getvalue()


def test_reconcile_broker_kis_applies_and_reports(kis_world):
    reconciled()
    order = place(quantity=4)
    kis_world.state.fill(odno(order), 4, 70000)
    out = run("--broker", "kis")
    assert "applied: order o-1" in out and "missing fill of 4 @ 70000" in out
    assert "kis: AGREED" in out
    order.refresh_from_db()
    assert order.status == OrderStatus.FILLED


def test_reconcile_broker_defaults_to_trading_broker_and_fails_on_disagreement(kis_world):
    kis_world.state.set_position("000660", 3, 100000)
    with pytest.raises(CommandError, match="1 difference"):
        run("--broker")
    assert BrokerSync.objects.get(broker="kis").status == BrokerSyncStatus.DISAGREED


def test_reconcile_broker_kis_unreachable_says_so(kis_world, kis_settings):
    kis_settings.KIS_REST_URL = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(CommandError, match="could not be asked"):
        run("--broker", "kis")


def test_reconcile_broker_paper_still_compares_our_own_book(kis_world):
    assert "Positions and cash equal their trades." in run("--broker", "paper")


def _disagreeing(fake):
    fake.state.set_position("000660", 3, 100000)
    broker_sync.broker_reconcile()
    return BrokerSync.objects.get(broker="kis")


def test_an_operator_overrides_in_the_admin_and_it_is_recorded(kis_world, client, operator):
    row = _disagreeing(kis_world)
    client.force_login(operator)
    page = client.get(reverse("admin:trading_brokersync_changelist"))
    assert page.status_code == 200 and b"DISAGREED" in page.content
    response = client.post(
        reverse("admin:trading_brokersync_changelist"),
        {"action": "override", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    row.refresh_from_db()
    assert row.override_by == operator and row.override_at is not None
    assert broker_sync.trading_allowed("kis") == (True, "")
    client.post(
        reverse("admin:trading_brokersync_changelist"),
        {"action": "end_override", "_selected_action": [row.pk]},
    )
    assert not broker_sync.trading_allowed("kis")[0]


def test_others_cannot_override(kis_world, client, trader):
    row = _disagreeing(kis_world)
    client.force_login(trader)
    client.post(
        reverse("admin:trading_brokersync_changelist"),
        {"action": "override", "_selected_action": [row.pk]},
    )
    row.refresh_from_db()
    assert row.override_at is None
