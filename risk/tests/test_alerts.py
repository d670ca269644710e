"""risk/alerts.py: each limit at, just below and just above its threshold; an alert raised once
per de-duplication window (Redis first, the table behind it), with its row, event and log.

Pub/Sub is shared by every Redis database number: events are picked out by alert id.
"""

import datetime as dt
import json
import logging
from decimal import Decimal

import pytest
import redis
from django.db import IntegrityError

from qbsite import events
from qbsite.events import EventType
from qbsite.tests.api_factories import make_stock
from risk.alerts import AlertType, alert_raise, dedup_key, limit_breaches
from risk.metrics import Figures
from risk.models import RiskAlert, RiskLimits

D = Decimal
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
LIMITS = RiskLimits()  # defaults: position 20 %, sector 30 %, exposure 90 %, cash 10 %,
# daily loss 50,000, monthly 500,000, 5 losses in a row


def figures(cash=800000, values=None, sectors=None, **extra):
    return Figures(at=NOW, cash=D(cash), values=values or {}, sector_of=sectors or {}, **extra)


def kinds(found):
    return [(b.alert_type, b.subject) for b in found]


@pytest.mark.parametrize(
    ("value", "breached"),
    [(D(199999), False), (D(200000), False), (D(200001), True)],  # of 1,000,000
)
def test_position_ratio(value, breached):
    found = limit_breaches(figures(cash=D(1000000) - value, values={"005930": value}), LIMITS)
    assert (kinds(found) == [(AlertType.POSITION_RATIO, "005930")]) is breached
    if breached:
        [b] = found
        assert (b.current, b.limit, b.symbol) == (D("0.200001"), D("0.2"), "005930")
        assert "above the 20.00 % limit" in b.message


@pytest.mark.parametrize(
    ("value", "breached"), [(D(299999), False), (D(300000), False), (D(300001), True)]
)
def test_sector_ratio_counts_the_sector_and_not_a_blank_one(value, breached):
    # Two symbols of one sector, each under the position limit.
    half = value / 2
    sectors = {"005930": "Tech", "000660": "Tech", "035720": ""}
    values = {"005930": half, "000660": half, "035720": D(150000)}
    found = limit_breaches(
        figures(cash=D(1000000) - value - D(150000), values=values, sectors=sectors), LIMITS
    )
    assert (AlertType.SECTOR_RATIO, "Tech") in kinds(found) if breached else not found
    assert all(b.subject != "(no sector)" for b in found)


def test_exposure_and_cash_reserve_at_and_around_their_limits():
    # 18 symbols of 50,000 each (5 %): no position or sector limit in play.
    def exposure(total_positions):
        n = 18
        values = {f"{i:06d}": total_positions / n for i in range(n)}
        return kinds(limit_breaches(figures(cash=D(1000000) - total_positions, values=values),
                                    LIMITS))  # fmt: skip

    assert exposure(D(900000)) == []  # 90 % exposure, 10 % cash: both at their limit
    assert exposure(D(899982)) == []
    assert exposure(D(900018)) == [(AlertType.EXPOSURE_RATIO, ""), (AlertType.CASH_RESERVE, "")]


@pytest.mark.parametrize(
    ("realized", "breached"), [(D(-49999), False), (D(-50000), True), (D(-50001), True)]
)
def test_daily_loss_reaches_its_limit_and_calls_for_a_halt(realized, breached):
    found = limit_breaches(figures(realized_today=realized), LIMITS)
    if not breached:
        assert found == []
        return
    [b] = found
    assert (b.alert_type, b.severity, b.state) == (AlertType.DAILY_LOSS, "CRITICAL", "HALTED")
    assert (b.current, b.limit) == (-realized, D(50000))


@pytest.mark.parametrize(
    ("realized", "breached"), [(D(-499999), False), (D(-500000), True), (D(-500001), True)]
)
def test_monthly_loss_calls_for_reducing(realized, breached):
    found = limit_breaches(figures(realized_month=realized), LIMITS)
    assert [(b.alert_type, b.state) for b in found] == (
        [(AlertType.MONTHLY_LOSS, "REDUCING")] if breached else []
    )


@pytest.mark.parametrize(("streak", "breached"), [(4, False), (5, True), (6, True)])
def test_consecutive_losses_call_for_reducing(streak, breached):
    found = limit_breaches(figures(consecutive_losses=streak, last_loss_trade=9), LIMITS)
    assert [(b.alert_type, b.state) for b in found] == (
        [(AlertType.CONSECUTIVE_LOSSES, "REDUCING")] if breached else []
    )


def test_an_empty_portfolio_breaches_nothing():
    assert limit_breaches(figures(cash=D(0)), LIMITS) == []
    # A gain is no loss.
    assert limit_breaches(figures(realized_today=D(10**9), realized_month=D(10**9)), LIMITS) == []


# --- raising -----------------------------------------------------------------------------------


@pytest.fixture
def subscriber(settings):
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(events.pubsub_channel(EventType.RISK_ALERT))
    assert pubsub.get_message(timeout=10)["type"] == "subscribe"
    yield pubsub
    pubsub.close()
    client.close()


def alert_events(pubsub, ids):
    found = []
    while message := pubsub.get_message(ignore_subscribe_messages=True, timeout=1):
        event = json.loads(message["data"])
        if event["data"]["id"] in ids:
            found.append(event)
    return found


def raise_one(**extra):
    return alert_raise(
        **{
            "alert_type": AlertType.DAILY_LOSS,
            "severity": "CRITICAL",
            "message": "Loss 60,000 reached 50,000.",
            "current_value": D(60000),
            "limit_value": D(50000),
            "action_taken": "Trading state ACTIVE -> HALTED.",
            "dedup_seconds": 300,
            **extra,
        }
    )


@pytest.mark.django_db(transaction=True)
def test_an_alert_is_raised_once_per_window_with_its_row_event_and_log(
    redis_client, subscriber, caplog
):
    make_stock("005930")
    with caplog.at_level(logging.WARNING, logger="qb.risk.alerts"):
        first = raise_one()
        assert raise_one() is None  # Redis says: a repeat
    assert first.dedup_key == "risk:alert:DAILY_LOSS:*" == dedup_key("DAILY_LOSS")
    assert 295 <= redis_client.ttl(dedup_key("DAILY_LOSS")) <= 300
    # Redis lost the key (a restart): the table still knows it was raised.
    redis_client.delete(dedup_key("DAILY_LOSS"))
    assert raise_one() is None
    # Another subject is another alert.
    other = raise_one(
        alert_type=AlertType.POSITION_RATIO, severity="WARNING", symbol="005930",
        message="005930 is 25 % of the portfolio.",
    )  # fmt: skip
    assert other.symbol_id == "005930" and other.dedup_key == "risk:alert:POSITION_RATIO:005930"
    assert RiskAlert.objects.count() == 2
    [event] = alert_events(subscriber, {first.pk})
    assert event["source"] == "risk"
    assert {k: event["data"][k] for k in ("alert_type", "severity", "current_value",
                                          "limit_value", "action_taken")} == {
        "alert_type": "DAILY_LOSS", "severity": "CRITICAL", "current_value": "60000",
        "limit_value": "50000", "action_taken": "Trading state ACTIVE -> HALTED.",
    }  # fmt: skip
    [record] = [r for r in caplog.records if "DAILY_LOSS" in r.getMessage()]
    assert record.levelno == logging.CRITICAL
    assert "Action: Trading state ACTIVE -> HALTED." in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_an_alert_that_cannot_be_written_frees_its_key(redis_client):
    with pytest.raises(IntegrityError):  # no such stock (the foreign key, checked at commit)
        raise_one(alert_type=AlertType.STOP_LOSS, symbol="999999", message="x")
    assert not redis_client.exists(dedup_key("STOP_LOSS", "999999"))
    assert RiskAlert.objects.count() == 0
