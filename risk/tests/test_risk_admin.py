"""The risk admin: limit edits audited like the API's, the dashboard's state control, locks."""

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from risk import services
from risk.models import LimitChange, RiskLimits, RiskLock, TradingState

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_for():
    def make(user):
        client = Client()
        client.force_login(user)
        return client

    return make


def limits_form(**overrides):
    limits = RiskLimits.objects.get(pk=1)
    data = {name: getattr(limits, name) for name in services.LIMIT_FIELDS}
    data.update(overrides)
    return {k: "" if v is None else str(v) for k, v in data.items()}


def test_a_limit_edit_in_the_admin_is_audited(operator, admin_client_for):
    client = admin_client_for(operator)
    url = "/admin/risk/risklimits/1/change/"
    assert client.get("/admin/risk/risklimits/").url == url
    answer = client.post(url, limits_form(max_sector_ratio="0.25", change_reason="concentration"))
    assert answer.status_code == 302, answer.content.decode()[:2000]
    change = LimitChange.objects.get()
    assert (change.field, change.old_value, change.new_value) == (
        "max_sector_ratio",
        "0.300000",
        "0.25",
    )
    assert (change.changed_by, change.actor, change.reason) == (
        operator,
        "admin:olivia-operator",
        "concentration",
    )


def test_a_bad_limit_in_the_admin_is_shown_not_saved(operator, admin_client_for):
    answer = admin_client_for(operator).post(
        "/admin/risk/risklimits/1/change/", limits_form(max_exposure_ratio="1.5")
    )
    assert answer.status_code == 200
    assert not LimitChange.objects.exists()


def test_the_dashboard_shows_the_state_and_its_buttons(operator, admin_client_for):
    page = admin_client_for(operator).get("/admin/").content.decode()
    assert 'id="trading-state-value">ACTIVE<' in page
    for state in ("ACTIVE", "REDUCING", "HALTED"):
        assert f'value="{state}"' in page


def test_the_dashboard_buttons_change_the_state(operator, admin_client_for, redis_client):
    client = admin_client_for(operator)
    answer = client.post("/admin/risk/tradingstate/set/", {"state": "REDUCING", "reason": "vol"})
    assert answer.status_code == 302
    row = TradingState.objects.get()
    assert (row.state, row.changed_by, row.reason) == ("REDUCING", "admin:olivia-operator", "vol")
    assert client.get("/admin/risk/tradingstate/set/").status_code == 405


@pytest.mark.parametrize("persona", ["trader", "client", "stranger"])
def test_non_operators_cannot_change_the_state_from_the_admin(personas, admin_client_for, persona):
    client = admin_client_for(personas[persona])
    answer = client.post("/admin/risk/tradingstate/set/", {"state": "HALTED"})
    assert answer.status_code == 302 and "/admin/login/" in answer.url
    assert services.trading_state_get() == "ACTIVE"


def test_locks_added_and_removed_in_the_admin(operator, admin_client_for):
    client = admin_client_for(operator)
    until = timezone.localtime(timezone.now() + dt.timedelta(hours=2))
    answer = client.post(
        "/admin/risk/risklock/add/",
        {
            "kind": "MANUAL",
            "symbol": "",
            "strategy": "",
            "until_0": until.strftime("%Y-%m-%d"),
            "until_1": until.strftime("%H:%M:%S"),
            "reason": "maintenance",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:3000]
    lock = RiskLock.objects.get()
    assert lock.created_by == "admin:olivia-operator" and lock.reason == "maintenance"
    answer = client.post(
        "/admin/risk/risklock/",
        {"action": "remove_locks", "_selected_action": [lock.pk]},
    )
    assert answer.status_code == 302
    lock.refresh_from_db()
    assert lock.removed_by == "admin:olivia-operator"
