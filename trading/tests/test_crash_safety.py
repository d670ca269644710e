"""Crash safety with real processes: `manage.py runengines strategy orders` killed with SIGKILL
at random moments while candles, signals, quotes, partial fills and resting limit orders flow,
then restarted.

The test process plays the collector (quotes in Redis and market_data_received; closed candles
in the Redis lists and candle_closed, on which the strategy engine makes its own signals) and
a strategy (signals stored, trading_signal published), and places a few limit orders itself
through the OMS, so fills also race between two processes. The engine runs with
PAPER_FILL_RATIO 0.5, so most market orders fill in two steps on two quotes. Some kills land
while the engine is still recovering from the previous one.

After the last restart, the flow stops, the quotes go on until nothing is left to do, and the
books must hold: every signal handled once (at most one order, none PENDING), no order twice,
every order in a sensible final state with its fills' execution ids an unbroken chain (no fill
lost, none counted twice), every position equal to the replay of its trades, and the cash
equal to what the trades add up to.

CRASH_SEED=<n> replays a run's kill times and flow (printed on failure).
"""

import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from marketdata.keys import candles_key, heartbeat_key
from qbsite import events
from qbsite.events import EventType
from qbsite.tests.api_factories import make_stock
from trading import oms
from trading.brokers.paper import paper_order_id
from trading.models import Order, OrderStatus, OrderType, Signal, SignalOutcome, Strategy
from trading.states import FINAL, OPEN, IllegalTransition
from trading.strategies import validate_parameters
from trading.tests.oms_helpers import (
    T0,
    assert_ledger_consistent,
    make_strategy,
    paper_account,
    put_quote,
)

BASE_DIR = Path(__file__).resolve().parents[2]
D = Decimal
S = OrderStatus
WAIT = 60  # seconds before something missing fails the test (never a timing assertion)
KILLS = 6
ENGINES = ("strategy", "orders")  # one process, as `runengines` runs them
SYMBOLS = ("005930", "000660")
pytestmark = pytest.mark.django_db(transaction=True)


class Engine:
    """One `runengines orders` subprocess after another."""

    def __init__(self, tmp_path: Path, redis_db: int) -> None:
        self.tmp_path = tmp_path
        self.redis_db = redis_db
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        log = self.tmp_path / f"engine-{len(self.logs)}.txt"
        self.logs.append(log)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "qbsite.settings_test",
            "REDIS_URL": django_settings.REDIS_URL,
            "REDIS_TEST_DB": str(self.redis_db),
            "DATABASE_URL": "postgres://postgres@localhost:5432/"
            + django_settings.DATABASES["default"]["TEST"]["NAME"],
            "PAPER_FILL_RATIO": "0.5",
            # The sweep (recovery while running) races the live handlers and the kills too.
            "ORDERS_SWEEP_SECONDS": "1",
            "ORDERS_SWEEP_MIN_AGE_SECONDS": "0.5",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runengines", *ENGINES, "--heartbeat-seconds", "0.2"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
            start_new_session=True,
        )

    def ready(self, redis_client) -> bool:
        pid = str(self.proc.pid).encode()
        for name in ENGINES:
            beat = redis_client.hgetall(heartbeat_key(name))
            if beat.get(b"pid") != pid or beat.get(b"ready") != b"1":
                return False
        return True

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("runengines did not exit within the wait after SIGTERM")

    def stderr(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in self.logs)


class Flow:
    """The signals, quotes and limit orders the test feeds in."""

    def __init__(self, rng: random.Random, redis_client, strategies) -> None:
        self.rng = rng
        self.redis = redis_client
        self.strategies = strategies
        self.prices = dict.fromkeys(SYMBOLS, 70000)
        self.minute = 0
        self.limits = 0
        self.quote_time = dt.datetime.now(dt.UTC)
        self.candles = dict.fromkeys(SYMBOLS, 0)

    def quote(self, symbol: str) -> None:
        # A walk of -2..+2 ticks of 100 around 70,000 (inside the band of 49,000..91,000);
        # each quote newer than the last, so a partly filled order fills again on it.
        price = min(max(self.prices[symbol] + 100 * self.rng.randint(-2, 2), 60000), 80000)
        self.prices[symbol] = price
        self.quote_time = max(dt.datetime.now(dt.UTC), self.quote_time + dt.timedelta(0, 0, 1))
        put_quote(self.redis, symbol, price, at=self.quote_time)
        events.publish(
            EventType.MARKET_DATA_RECEIVED,
            {"symbol": symbol, "quote": {"close": str(price)}},
            source="test-collector",
        )

    def candle(self) -> None:
        """A closed 1-minute candle for the strategy engine: the list, then candle_closed."""
        symbol = self.rng.choice(SYMBOLS)
        self.candles[symbol] += 1
        close = self.prices[symbol]
        candle = {
            "timestamp": (T0 + dt.timedelta(minutes=self.candles[symbol])).isoformat(),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 10,
            "interval": "1m",
        }
        self.redis.lpush(candles_key(symbol, "1m"), json.dumps(candle))
        events.publish(
            EventType.CANDLE_CLOSED,
            {"symbol": symbol, "interval": "1m", "candle": candle},
            source="test-collector",
        )

    def signal(self) -> None:
        strategy = self.rng.choice(self.strategies)
        symbol = self.rng.choice(SYMBOLS)
        self.minute += 1
        action = "BUY" if self.rng.random() < 0.6 else "SELL"
        made = Signal.objects.create(
            strategy=strategy,
            symbol_id=symbol,
            interval="1m",
            time=T0 + dt.timedelta(minutes=self.minute),
            action=action,
            price=D(self.prices[symbol]),
            # Mostly small explicit sizes (many orders); sometimes sized by the engine.
            quantity=self.rng.choice([1, 2, 3, 5, 7, None]),
            reason="crash test",
        )
        events.publish(
            EventType.TRADING_SIGNAL,
            {"signal_id": made.pk, "strategy": strategy.name, "symbol": symbol, "action": action},
            source="test-strategy",
        )

    def limit_order(self) -> None:
        symbol = self.rng.choice(SYMBOLS)
        self.limits += 1
        oms.order_place(
            client_order_id=f"lim-{self.limits}",
            symbol=symbol,
            side="BUY",
            order_type=OrderType.LIMIT,
            quantity=self.rng.randint(1, 6),
            limit_price=D(self.prices[symbol] - 100 * self.rng.randint(0, 3)),
            actor="test",
        )

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            roll = self.rng.random()
            if roll < 0.3:
                self.signal()
            elif roll < 0.45:
                self.candle()
            elif roll < 0.95:
                self.quote(self.rng.choice(SYMBOLS))
            else:
                self.limit_order()
            time.sleep(self.rng.uniform(0.002, 0.02))


def _until(predicate, what, engine: Engine, during=None):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        if engine.proc.poll() is not None:
            pytest.fail(f"runengines exited ({engine.proc.returncode}) waiting for {what}")
        if during is not None:
            during()
        time.sleep(0.05)
    pytest.fail(f"no {what} within {WAIT} s\n{engine.stderr()}")


def _pending_count() -> int:
    return Signal.objects.filter(outcome=SignalOutcome.PENDING).count()


def _settled() -> bool:
    unsettled = (
        Signal.objects.filter(outcome=SignalOutcome.PENDING).exists()
        or Order.objects.filter(status__in=(S.NEW, S.SUBMITTED, S.CANCEL_PENDING)).exists()
        or Order.objects.filter(order_type=OrderType.MARKET, status__in=OPEN).exists()
    )
    return not unsettled


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, redis_client):
    seed = int(os.environ.get("CRASH_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    for symbol in SYMBOLS:
        make_stock(symbol, market="KOSPI")
    paper_account("200000000")
    strategies = [
        make_strategy("crash-a", symbols=SYMBOLS, allocation="20000000"),
        make_strategy("crash-b", symbols=SYMBOLS, allocation="20000000"),
    ]
    # The strategy engine's own signals: the original plan's sample on the test's candles
    # (crash-a and crash-b, sma_crossover with their defaults, run on them too).
    Strategy.objects.create(
        name="crash-s",
        kind="sample_mean5",
        parameters=validate_parameters("sample_mean5", {}),
        symbols=list(SYMBOLS),
        capital_allocation=D(2_000_000),
        enabled=True,
    )
    flow = Flow(rng, redis_client, strategies)
    for symbol in SYMBOLS:
        flow.quote(symbol)
    engine = Engine(tmp_path, redis_client.connection_pool.connection_kwargs["db"])
    try:
        for kill in range(KILLS):
            engine.start()
            if kill % 3 == 2:
                # Kill it in the middle of its recovery from the last kill: once it has
                # handled a first pending signal, at a random moment within 0-0.3 s.
                while not _pending_count():
                    flow.signal()  # something to recover
                before = _pending_count()
                _until(lambda n=before: _pending_count() < n, "recovery under way", engine)
                time.sleep(rng.uniform(0, 0.3))
            else:
                _until(lambda: engine.ready(redis_client), "a ready heartbeat", engine)
                flow.run_for(rng.uniform(0.3, 2.0))
            engine.kill()
            flow.run_for(rng.uniform(0.1, 0.5))  # events for a dead engine wait in its channel
        engine.start()
        _until(lambda: engine.ready(redis_client), "a ready heartbeat", engine)
        flow.run_for(1.0)
        # The flow stops; quotes go on until every signal and market order is done.
        _until(
            _settled,
            "every signal and market order settled",
            engine,
            during=lambda: [flow.quote(s) for s in SYMBOLS],
        )
        for order in Order.objects.filter(status__in=OPEN):
            with contextlib.suppress(IllegalTransition):  # the engine filled it meanwhile
                oms.order_cancel(order_id=order.pk, actor="test", reason="end of the test")
        code = engine.stop()
    except BaseException:
        if engine.proc is not None and engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait()
        print(f"CRASH_SEED={seed}\n{engine.stderr()}")
        raise
    assert code == 0, engine.stderr()
    log = engine.stderr()
    assert "Traceback" not in log, log

    signals = list(Signal.objects.all())
    orders = list(Order.objects.select_related("signal").prefetch_related("fills", "transitions"))
    assert len(signals) > 30 and len(orders) > 30, (len(signals), len(orders))

    # Every signal handled, at most one order each, and only ORDERED ones have one.
    by_signal = {}
    for order in orders:
        if order.signal_id is not None:
            assert order.signal_id not in by_signal, f"signal {order.signal_id} has two orders"
            by_signal[order.signal_id] = order
            assert order.client_order_id == f"sig-{order.signal_id}"
        else:
            assert order.client_order_id.startswith("lim-"), order
    for sig in signals:
        assert sig.outcome != SignalOutcome.PENDING, sig
        assert (sig.outcome == SignalOutcome.ORDERED) == (sig.pk in by_signal), sig
        if sig.outcome == SignalOutcome.SKIPPED:
            assert sig.outcome_reason, sig

    for order in orders:
        # A sensible final state: market orders done, limit orders filled or canceled.
        assert order.status in FINAL, (order, order.status)
        if order.status == S.DENIED:
            assert order.reason_code and not order.fills.exists(), order
        assert order.status != S.REJECTED, (order, order.reason)
        if order.order_type == OrderType.MARKET and order.status != S.DENIED:
            assert order.status == S.FILLED, (order, order.status)
        # The transitions are one unbroken path from NEW to the status it has.
        path = [(t.from_status, t.to_status) for t in order.transitions.all()]
        assert path[0] == ("", S.NEW), (order, path)
        for (_, before), (after, _) in itertools.pairwise(path):
            assert before == after, (order, path)
        assert path[-1][1] == order.status, (order, path)
        # Fills: an unbroken chain of execution ids (none lost, none twice).
        filled = 0
        for trade in sorted(order.fills.all(), key=lambda t: t.pk):
            assert trade.execution_id == f"{paper_order_id(order.client_order_id)}-{filled}"
            filled += trade.quantity
        assert filled == order.filled_quantity, order

    assert_ledger_consistent()
    # What the run went through (seen with -s).
    recovered = [line for line in log.splitlines() if "Orders engine ready" in line]
    statuses = collections.Counter(o.status for o in orders)
    fills = sum(o.fills.count() for o in orders)
    by_strategy = collections.Counter(
        Signal.objects.values_list("strategy__name", "outcome").order_by()
    )
    print(f"CRASH_SEED={seed}: {dict(by_strategy)}, orders {dict(statuses)}, {fills} fills")
    print("\n".join(recovered))
