"""Strategy and signal services, and the holdings selector, on real PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from marketdata.services import stock_upsert
from ops.logging import SystemLogHandler
from ops.models import SystemLog
from qbsite import events
from qbsite.events import EventType
from qbsite.exceptions import Conflict, InvalidInput
from trading.models import Order, Signal, Strategy, Trade
from trading.strategies import ParameterError, UnknownStrategyKind
from trading.strategies.selectors import Holding, strategies_enabled, strategy_holdings
from trading.strategies.services import (
    INTERVALS,
    SignalError,
    StrategyError,
    signal_record,
    strategy_create,
    strategy_delete,
    strategy_disable,
    strategy_update,
)

WAIT = 10
T0 = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)  # 09:00 KST


@pytest.fixture
def stocks(db):
    stock_upsert(symbol="005930", name="Samsung Electronics", market="KOSPI")
    stock_upsert(symbol="000660", name="SK hynix", market="KOSPI")


def make(name="sma", kind="sma_crossover", **kwargs):
    kwargs.setdefault("capital_allocation", Decimal("10000000"))
    kwargs.setdefault("symbols", ["005930"])
    return strategy_create(name=name, kind=kind, **kwargs)


@pytest.fixture
def subscribe(settings, redis_client):
    pubsubs = []

    def sub(event_type):
        pubsub = redis_client.pubsub()
        pubsub.subscribe(events.pubsub_channel(event_type))
        assert pubsub.get_message(timeout=WAIT)["type"] == "subscribe"
        pubsubs.append(pubsub)
        return pubsub

    yield sub
    for pubsub in pubsubs:
        pubsub.close()


def received(pubsub, correlation_id, *, wait=WAIT) -> list[dict]:
    """Every envelope with our correlation_id that arrives within `wait` seconds (Pub/Sub
    channels are shared by every test run on this Redis, whatever its database number)."""
    found = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message and message["type"] == "message":
            envelope = json.loads(message["data"])
            if envelope["correlation_id"] == correlation_id:
                found.append(envelope)
    return found


def first(pubsub, correlation_id) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message and message["type"] == "message":
            envelope = json.loads(message["data"])
            if envelope["correlation_id"] == correlation_id:
                return envelope
    raise AssertionError(f"no event with correlation_id {correlation_id}")


# --- strategy_create / strategy_update -------------------------------------------------------


def test_create_stores_the_cleaned_parameters(stocks):
    s = make(parameters={"fast": 3}, symbols=["005930", "000660", "005930"], enabled=True)
    s.refresh_from_db()
    assert s.parameters == {"fast": 3, "slow": 20}
    assert s.symbols == ["005930", "000660"]  # the duplicate dropped, order kept
    assert s.enabled and s.disabled_reason == ""
    assert strategies_enabled() == [s]


def test_the_intervals_are_the_models_check():
    assert INTERVALS == ("1m", "5m", "15m", "1h", "1d")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kind": "momentum"}, UnknownStrategyKind, "Unknown strategy kind 'momentum'"),
        ({"parameters": {"fast": 0}}, ParameterError, "fast: must be at least 1, got 0"),
        ({"parameters": {"lag": 2}}, ParameterError, "lag: unknown parameter"),
        ({"symbols": ["005930", "123456"]}, StrategyError, "Unknown symbol 123456: not in"),
        (
            {"symbols": ["123456", "654321"]},
            StrategyError,
            "Unknown symbols 123456, 654321: not in stocks_metadata",
        ),
        ({"symbols": [5930]}, StrategyError, "symbols: 5930 is not a KRX symbol"),
        ({"symbols": "005930"}, StrategyError, "symbols must be a list"),
        ({"interval": "2m"}, StrategyError, "interval '2m' is not one of 1m, 5m, 15m, 1h, 1d"),
        (
            {"kind": "sample_mean5", "interval": "5m"},
            StrategyError,
            "sample_mean5 runs on 1m candles only, not 5m",
        ),
        (
            {"symbols": [], "enabled": True},
            StrategyError,
            "An enabled strategy needs at least one symbol",
        ),
    ],
)
def test_create_refuses_bad_input_naming_it(stocks, kwargs, error, message):
    with pytest.raises(error) as caught:
        make(**kwargs)
    assert isinstance(caught.value, InvalidInput)
    assert message in caught.value.message
    assert not Strategy.objects.exists()


def test_create_runs_the_models_validation(stocks):
    with pytest.raises(ValidationError) as caught:
        make(capital_allocation=Decimal("0"))
    assert "strategies_allocation_gt_0" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        make(name="not a slug!")
    assert "name" in caught.value.message_dict
    make()
    with pytest.raises(ValidationError) as caught:
        make()
    assert "already exists" in str(caught.value.message_dict["name"])
    with pytest.raises(StrategyError, match="symbols: '5930' is not a KRX symbol"):
        make(name="bad-symbol", symbols=["5930"])


def test_update_validates_against_the_new_kind(stocks):
    s = make(parameters={"fast": 3, "slow": 10})
    strategy_update(strategy=s, parameters={"slow": 30})
    s.refresh_from_db()
    assert s.parameters == {"fast": 5, "slow": 30}  # a full replacement, defaults filled
    with pytest.raises(ParameterError, match="fast: unknown parameter"):
        strategy_update(strategy=Strategy.objects.get(pk=s.pk), kind="rsi_reversion")
    strategy_update(
        strategy=Strategy.objects.get(pk=s.pk), kind="rsi_reversion", parameters={"period": 9}
    )
    s.refresh_from_db()
    assert (s.kind, s.parameters) == (
        "rsi_reversion",
        {"period": 9, "oversold": 30.0, "overbought": 70.0},
    )
    with pytest.raises(StrategyError, match="Cannot change disabled_reason"):
        strategy_update(strategy=s, disabled_reason="")


def test_enabling_clears_the_disabled_reason(stocks):
    s = make(enabled=True)
    strategy_disable(strategy=s, reason="boom")
    strategy_update(strategy=s, enabled=True)
    s.refresh_from_db()
    assert s.enabled and s.disabled_reason == ""


def test_a_strategy_with_trades_keeps_its_name(stocks):
    s = make()
    strategy_update(strategy=s, name="sma-fast")  # no trades yet: fine
    Trade.objects.create(
        timestamp=T0,
        symbol_id="005930",
        side="BUY",
        quantity=1,
        price=Decimal(70000),
        strategy="sma-fast",
        order_type="MARKET",
    )
    with pytest.raises(Conflict, match="has trades recorded under its name"):
        strategy_update(strategy=s, name="sma-slow")
    s.refresh_from_db()
    assert s.name == "sma-fast"


def test_delete_refuses_a_strategy_with_signals(stocks):
    unused = make("unused")
    strategy_delete(strategy=unused)
    assert not Strategy.objects.filter(name="unused").exists()
    s = make()
    signal_record(
        strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=Decimal(70000)
    )
    with pytest.raises(Conflict, match="has signals or orders and cannot be deleted"):
        strategy_delete(strategy=s)
    assert Strategy.objects.filter(pk=s.pk).exists()


# --- strategy_disable ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_disable_alerts_once_and_logs_an_error(stocks, subscribe):
    pubsub = subscribe(EventType.RISK_ALERT)
    s = make(f"failing-{uuid.uuid4().hex[:8]}", enabled=True)
    correlation_id = f"test-{uuid.uuid4()}"
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        strategy_disable(
            strategy=s,
            reason="on_candle raised: ZeroDivisionError",
            symbol="005930",
            correlation_id=correlation_id,
            exc=exc,
        )
    assert (s.enabled, s.disabled_reason) == (False, "on_candle raised: ZeroDivisionError")
    s.refresh_from_db()
    assert (s.enabled, s.disabled_reason) == (False, "on_candle raised: ZeroDivisionError")

    # The same failure reported again (another event in flight): no second alert.
    strategy_disable(strategy=s, reason="again", correlation_id=correlation_id)
    s.refresh_from_db()
    assert s.disabled_reason == "on_candle raised: ZeroDivisionError"

    [alert] = received(pubsub, correlation_id, wait=2)
    assert alert["source"] == "strategy"
    assert alert["data"] == {
        "alert_type": "STRATEGY_ERROR",
        "strategy": s.name,
        "symbol": "005930",
        "message": "on_candle raised: ZeroDivisionError",
        "severity": "CRITICAL",
        "action_taken": "strategy disabled",
    }

    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert handler.flush(timeout=30)
    [row] = SystemLog.objects.filter(component="qb.strategies", message__contains=s.name)
    assert row.level == "ERROR"
    assert row.message == f"Strategy {s.name} disabled: on_candle raised: ZeroDivisionError"
    assert row.metadata["symbol"] == "005930"
    assert "ZeroDivisionError: division by zero" in row.metadata["exception"]


def test_disable_publishes_nothing_if_the_transaction_rolls_back(
    stocks, subscribe, django_capture_on_commit_callbacks
):
    pubsub = subscribe(EventType.RISK_ALERT)
    s = make(enabled=True)
    correlation_id = f"test-{uuid.uuid4()}"
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        strategy_disable(strategy=s, reason="boom", correlation_id=correlation_id)
        raise RuntimeError("rolled back")
    assert callbacks == []
    assert received(pubsub, correlation_id, wait=1) == []
    s.refresh_from_db()
    assert s.enabled


# --- signal_record ---------------------------------------------------------------------------


def test_a_signal_is_stored_and_published_once(
    stocks, subscribe, django_capture_on_commit_callbacks
):
    pubsub = subscribe(EventType.TRADING_SIGNAL)
    s = make()
    correlation_id = f"test-{uuid.uuid4()}"
    kwargs = dict(
        strategy=s,
        symbol="005930",
        interval="1m",
        time=T0,
        action="BUY",
        price=Decimal("70100"),
        confidence=0.1234567,
        reason="cross",
        correlation_id=correlation_id,
    )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        signal, created = signal_record(**kwargs)
    assert created and len(callbacks) == 1
    stored = Signal.objects.get()
    assert stored.pk == signal.pk
    assert (stored.action, stored.price, stored.confidence, stored.quantity) == (
        "BUY",
        Decimal("70100.00"),
        Decimal("0.123457"),
        None,
    )
    assert (signal.confidence, signal.price) == (stored.confidence, stored.price)
    assert (stored.outcome, stored.reason, stored.time) == ("PENDING", "cross", T0)

    # The same candle again (a replayed candle_closed): the stored signal, nothing published.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again, created = signal_record(**{**kwargs, "action": "SELL", "quantity": 5})
    assert not created and callbacks == []
    assert again.pk == signal.pk and again.action == "BUY"
    assert Signal.objects.count() == 1

    [event] = received(pubsub, correlation_id, wait=2)
    assert event["event_type"] == "trading_signal" and event["source"] == "strategy"
    assert event["data"] == {
        "signal_id": signal.pk,
        "strategy": "sma",
        "symbol": "005930",
        "action": "BUY",
        "price": "70100.00",
        "quantity": None,
        "confidence": "0.123457",
        "time": "2026-01-05T00:00:00+00:00",
    }


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_signal_commits_alone_then_is_published(
    stocks, subscribe, settings, caplog
):
    # The strategy engine's case: no transaction around signal_record, so the INSERT commits
    # by itself and the event goes out after it.
    pubsub = subscribe(EventType.TRADING_SIGNAL)
    s = make()
    correlation_id = f"test-{uuid.uuid4()}"
    base = dict(strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=70000)
    signal, created = signal_record(**base, correlation_id=correlation_id)
    assert created and Signal.objects.get().pk == signal.pk
    [event] = received(pubsub, correlation_id, wait=2)
    assert event["data"]["signal_id"] == signal.pk
    again, created = signal_record(**base, correlation_id=correlation_id)  # replayed candle
    assert not created and again.pk == signal.pk
    assert received(pubsub, correlation_id, wait=0.5) == []

    # Redis away after the row committed: the signal is kept, the failure logged, not raised.
    from qbsite.testing import closed_port

    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    with caplog.at_level(logging.ERROR, logger="qb.events"):
        later, created = signal_record(**{**base, "time": T0 + dt.timedelta(minutes=1)})
    assert created and Signal.objects.filter(pk=later.pk).exists()
    assert "Could not publish trading_signal" in caplog.text

    # A row the database refuses (an unknown symbol: the deferred foreign key, checked when
    # the statement commits) names what is wrong and stores nothing.
    with pytest.raises(InvalidInput, match="refused by the database"):
        signal_record(**{**base, "symbol": "999999"})
    assert Signal.objects.count() == 2


def test_another_candle_interval_or_strategy_is_another_signal(stocks):
    s, other = make(), make("other")
    base = dict(strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=70000)
    assert signal_record(**base)[1]
    assert signal_record(**{**base, "time": T0 + dt.timedelta(minutes=1)})[1]
    assert signal_record(**{**base, "interval": "5m"})[1]
    assert signal_record(**{**base, "symbol": "000660"})[1]
    assert signal_record(**{**base, "strategy": other})[1]
    assert Signal.objects.count() == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action": "HOLD"}, "action must be BUY or SELL"),
        ({"price": 70000.5}, "price must be a Decimal"),
        ({"price": Decimal(0)}, "price must be positive"),
        ({"price": Decimal("NaN")}, "price must be positive"),
        ({"quantity": 0}, "quantity must be a whole number"),
        ({"confidence": 2}, "confidence must be a number from 0 to 1"),
        ({"confidence": "x"}, "confidence must be a number from 0 to 1"),
        ({"time": dt.datetime(2026, 1, 5, 9, 0)}, "time must be a timezone-aware datetime"),
        ({"interval": "2m"}, "interval '2m' is not one of"),
    ],
)
def test_bad_signals_are_refused(stocks, change, message):
    s = make()
    base = dict(
        strategy=s, symbol="005930", interval="1m", time=T0, action="BUY", price=Decimal(70000)
    )
    with pytest.raises(SignalError, match=message):
        signal_record(**{**base, **change})
    assert not Signal.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_signal_on_an_unknown_symbol_is_refused_at_commit(stocks):
    s = make()
    with pytest.raises(SignalError, match="Signal of sma on 123456 refused by the database"):
        signal_record(
            strategy=s, symbol="123456", interval="1m", time=T0, action="BUY", price=Decimal(1)
        )
    assert not Signal.objects.exists()


# --- holdings --------------------------------------------------------------------------------


def _trade(strategy, side, quantity, *, symbol="005930", status="PENDING"):
    Trade.objects.create(
        timestamp=T0,
        symbol_id=symbol,
        side=side,
        quantity=quantity,
        price=Decimal(70000),
        strategy=strategy,
        order_type="MARKET",
        status=status,
        profit_loss=Decimal(0) if side == "SELL" else None,
    )


def _order(strategy, side, quantity, *, filled=0, status="SUBMITTED", symbol="005930"):
    return Order.objects.create(
        client_order_id=uuid.uuid4().hex,
        strategy=strategy,
        symbol_id=symbol,
        side=side,
        order_type="MARKET",
        quantity=quantity,
        filled_quantity=filled,
        average_fill_price=Decimal(70000) if filled else None,
        status=status,
        created_at=T0,
    )


def test_holdings_count_own_trades_and_unfinished_orders(stocks):
    a, b, c = make("a"), make("b"), make("c")
    _trade("a", "BUY", 30)
    _trade("a", "SELL", 10)
    _trade("a", "BUY", 100, status="CANCELED")  # busted: not held
    _trade("a", "BUY", 7, symbol="000660")  # another symbol
    _trade("b", "BUY", 5)
    _trade("", "BUY", 50)  # manual
    _order(a, "SELL", 8, filled=3, status="PARTIALLY_FILLED")
    _order(a, "BUY", 4, status="NEW")
    _order(a, "BUY", 9, status="FILLED", filled=9)  # final: not open
    _order(b, "BUY", 6, status="CANCELED")
    holdings = strategy_holdings(symbol="005930", strategies=[a, b, c])
    assert holdings == {
        a.pk: Holding(holding=20, open_buy=4, open_sell=5),
        b.pk: Holding(holding=5, open_buy=0, open_sell=0),
        c.pk: Holding(),
    }
    assert strategy_holdings(symbol="005930", strategies=[]) == {}


def test_holdings_are_one_query_however_many_strategies(stocks, django_assert_num_queries):
    strategies = [make(f"s{i}") for i in range(5)]
    with django_assert_num_queries(1):
        strategy_holdings(symbol="005930", strategies=strategies)
