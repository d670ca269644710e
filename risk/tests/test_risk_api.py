"""The risk API: who may change the trading state, the limits and the locks; what everyone may
read; the answers (a code and a sentence) for bad input."""

import datetime as dt

import pytest
from django.utils import timezone

from risk import services
from risk.models import LimitChange, RiskLock, TradingState

pytestmark = pytest.mark.django_db

STATE = "/api/v1/risk/state/"
LIMITS = "/api/v1/risk/limits/"
LOCKS = "/api/v1/risk-locks/"


@pytest.mark.parametrize("persona", ["operator", "trader", "client"])
def test_every_role_reads_state_limits_locks_alerts(personas, api_client_for, persona):
    api = api_client_for(personas[persona])
    assert api.get(STATE).json()["state"] == "ACTIVE"
    assert api.get(LIMITS).json()["max_position_ratio"] == "0.200000"
    for url in (LOCKS, "/api/v1/risk-alerts/", "/api/v1/risk-limit-changes/"):
        assert api.get(url).status_code == 200, url
    assert api.get("/api/v1/risk-state-changes/").status_code == 200


def test_strangers_and_anonymous_read_nothing(personas, api_client_for):
    assert api_client_for(personas["stranger"]).get(STATE).status_code == 403
    assert api_client_for(None).get(STATE).status_code == 401


def test_only_operators_change_the_state(personas, api_client_for, redis_client):
    for persona in ("trader", "client", "stranger"):
        answer = api_client_for(personas[persona]).post(
            STATE, {"state": "HALTED", "reason": "x"}, format="json"
        )
        assert answer.status_code == 403, persona
    assert services.trading_state_get() == "ACTIVE"
    operator = api_client_for(personas["operator"])
    answer = operator.post(STATE, {"state": "HALTED", "reason": "daily loss"}, format="json")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["state"], body["changed"], body["changed_by"]) == (
        "HALTED",
        True,
        "api:olivia-operator",
    )
    again = operator.post(STATE, {"state": "HALTED", "reason": "again"}, format="json").json()
    assert again["changed"] is False
    assert TradingState.objects.get().reason == "daily loss"


def test_a_bad_state_is_a_400_naming_it(personas, api_client_for):
    answer = api_client_for(personas["operator"]).post(
        STATE, {"state": "PAUSED", "reason": "x"}, format="json"
    )
    assert answer.status_code == 400
    assert "state" in answer.json()


def test_limits_patch_operator_only_and_audited(personas, api_client_for):
    body = {"max_position_ratio": "0.1", "reason": "calmer"}
    for persona in ("trader", "client"):
        assert (
            api_client_for(personas[persona]).patch(LIMITS, body, format="json").status_code == 403
        )
    answer = api_client_for(personas["operator"]).patch(LIMITS, body, format="json")
    assert answer.status_code == 200
    assert answer.json()["max_position_ratio"] == "0.100000"
    assert answer.json()["changes"][0]["field"] == "max_position_ratio"
    change = LimitChange.objects.get()
    assert (change.changed_by, change.actor, change.reason) == (
        personas["operator"],
        "api:olivia-operator",
        "calmer",
    )
    listed = api_client_for(personas["client"]).get("/api/v1/risk-limit-changes/").json()
    assert listed["results"][0]["changed_by"] == "olivia-operator"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"max_position_ratio": "2"}, "max_position_ratio"),
        ({"bogus": 1}, "bogus"),
        ({"reason": "nothing named"}, "at least one"),
    ],
)
def test_limits_patch_bad_input_is_a_400(personas, api_client_for, body, says):
    answer = api_client_for(personas["operator"]).patch(LIMITS, body, format="json")
    assert answer.status_code == 400
    assert says in answer.content.decode()
    assert not LimitChange.objects.exists()


def test_locks_created_and_removed_by_operators(personas, api_client_for):
    from qbsite.tests.api_factories import make_stock

    make_stock("005930", market="KOSPI")
    until = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    body = {"symbol": "005930", "until": until, "reason": "earnings"}
    assert api_client_for(personas["trader"]).post(LOCKS, body, format="json").status_code == 403
    operator = api_client_for(personas["operator"])
    created = operator.post(LOCKS, body, format="json")
    assert created.status_code == 201
    lock = created.json()
    assert (lock["kind"], lock["symbol"], lock["active"]) == ("MANUAL", "005930", True)
    listed = operator.get(LOCKS, {"active": "true"}).json()["results"]
    assert [row["id"] for row in listed] == [lock["id"]]
    assert api_client_for(personas["client"]).delete(f"{LOCKS}{lock['id']}/").status_code == 403
    removed = operator.delete(f"{LOCKS}{lock['id']}/")
    assert removed.status_code == 200 and removed.json()["active"] is False
    assert RiskLock.objects.get().removed_by == "api:olivia-operator"
    assert operator.get(LOCKS, {"active": "true"}).json()["results"] == []


def test_a_lock_in_the_past_is_a_400(personas, api_client_for):
    past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    answer = api_client_for(personas["operator"]).post(
        LOCKS, {"until": past, "reason": "x"}, format="json"
    )
    assert answer.status_code == 400
    assert "after now" in answer.json()["detail"]


def test_alerts_are_listed_newest_first(personas, api_client_for, redis_client):
    services.alert_record(alert_type="DAILY_LOSS", severity="WARNING", message="80 % of the limit")
    services.alert_record(alert_type="DAILY_LOSS", severity="CRITICAL", message="at the limit")
    rows = api_client_for(personas["client"]).get("/api/v1/risk-alerts/").json()["results"]
    assert [r["severity"] for r in rows] == ["CRITICAL", "WARNING"]


def test_alert_dedup_within_the_window(redis_client):
    first = services.alert_record(
        alert_type="EXPOSURE", severity="WARNING", message="m", dedup_key="exposure"
    )
    assert first is not None
    assert (
        services.alert_record(
            alert_type="EXPOSURE", severity="WARNING", message="m", dedup_key="exposure"
        )
        is None
    )
