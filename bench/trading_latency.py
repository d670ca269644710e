"""Trading latency through the real engines, with the channel layer as the floor; order throughput.

    python bench/trading_latency.py [--candles 300] [--orders 1000] [--connections 4] [--db 9]

1. Floors, measured first in the same run: a Channels layer round trip (send -> receive on one
   channel; group_send -> receive, what the events use; apublish -> receive: the Pub/Sub mirror
   plus the group send), one PostgreSQL commit (UPDATE of one row), and the chain skeleton:
   the chain below with every engine's logic taken out (the tick's HSET, then two stages that
   each receive a group send, hop to a database thread and commit; skeleton_floor()).
2. Tick-to-order and tick-to-position, p50 / p99: the collector, strategy and orders engines run
   in this process under the engines runtime (qbsite.engines.Runtime, as `manage.py runengines`
   runs them) on the Redis channel layer. The collector's feed is a queue this script fills: one
   tick per step, each in the next minute, so each tick closes the previous 1-minute candle.
   The chain: tick -> collector (Redis write, candle_closed) -> strategy engine (a strategy that
   buys one share when flat and sells it when held: a signal on every candle, stored, then
   trading_signal) -> orders engine (order_from_signal: sized, checked, SUBMITTED, sent to the
   paper broker, filled, position updated). t0 = the tick handed to the feed; "order" = the
   order_placed event (published when the SUBMITTED row commits, just before broker.submit)
   and "position" = the position_updated event (published when the fill commits), both as a
   Pub/Sub client receives them on a thread of this process. Two channel-layer hops (candle_
   closed, trading_signal) and three commits (the signal; the order with its checks; the
   broker's ack with the fill) are on the path. Then where the time goes: p50 from the tick to
   the candle_closed and trading_signal events (Pub/Sub arrival) and to the rows' own stamps
   (signal created_at, order created_at, the SUBMITTED and ACCEPTED transitions' `at`).
3. Order throughput, sequential and with --connections clients: oms.order_place directly, the
   API in process (Django's test client), and POST /api/v1/orders/ on a live uvicorn (one
   worker, DEBUG off, throttle off) over keep-alive connections. Market orders of one share,
   buy and sell in turn, at a fresh quote: each is created, checked, submitted, filled. (A
   plain sync process has no event loop: there each event's group_send runs through
   async_to_sync on a new loop, which the served API and the engines do not pay.)

The risk limits are opened wide for the run (risk.testing.PERMISSIVE: every rule still runs
on every order) and put back at the end (both changes are in risk_limit_changes).

Writes: the Redis database --db (flushed before and after; default 9, not a test database),
and in PostgreSQL only rows of its own that it deletes at the end: the stock QBBNCH, the
strategy bench-latency, the user bench-trader, their signals, orders, trades and position. The
paper account's cash is given back the exact net of the bench's trades. Those tables are
vacuumed before and after (the bench's dead rows would slow the next run).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
SYMBOL = "QBBNCH"
STRATEGY = "bench-latency"
USER = "bench-trader"
PRICE = 70000


def _figures(label: str, samples_s: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples_s)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:<44} n={len(ms):<5} p50={p50:7.3f} ms  p99={p99:7.3f} ms  max={ms[-1]:7.3f} ms")


def _rate(label: str, count: int, seconds: float) -> None:
    print(f"{label:<44} {count / seconds:8.0f} orders/s  ({count} in {seconds:.2f} s)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- setup ----------------------------------------------------------------------------------------


def _register_strategy():
    from trading.strategies.base import BaseStrategy, SignalIntent, register

    @register
    class BenchAlternate(BaseStrategy):
        """A signal on every candle: buy one share when flat, sell it when held."""

        kind = "bench_alternate"
        label = "Bench: buy when flat, sell when held"
        intervals = ("1m",)
        parameters = {}

        def history(self) -> int:
            return 1

        def on_candle(self, ctx):
            if ctx.flat:
                return [SignalIntent("BUY", quantity=1, reason="bench")]
            if ctx.sellable:
                return [SignalIntent("SELL", quantity=ctx.sellable, reason="bench")]
            return []


def _setup_rows():
    from decimal import Decimal

    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    from marketdata.services import stock_upsert
    from qbsite.roles import TRADER_GROUP
    from trading.models import Strategy
    from trading.services import account_ensure

    _cleanup_rows()
    stock_upsert(symbol=SYMBOL, name="QB trading bench", market="KOSPI")
    Strategy.objects.create(
        name=STRATEGY,
        kind="bench_alternate",
        symbols=[SYMBOL],
        interval="1m",
        enabled=True,
        capital_allocation=Decimal(10_000_000),
    )
    account = account_ensure(broker="paper")
    user = User.objects.create_user(USER)
    user.groups.add(Group.objects.get_or_create(name=TRADER_GROUP)[0])
    token = Token.objects.create(user=user)
    return account, token.key


def _cleanup_rows() -> None:
    """Delete what the bench made; give the paper account back the net of its trades."""
    from decimal import Decimal

    from django.contrib.auth.models import User
    from django.db import transaction
    from django.db.models import F

    from marketdata.models import Stock
    from trading.models import Account, Order, Position, Signal, Strategy, Trade

    with transaction.atomic():
        net = Decimal(0)
        for side, price, quantity, commission, tax in Trade.objects.filter(
            symbol_id=SYMBOL, order__broker="paper"
        ).values_list("side", "price", "quantity", "commission", "tax"):
            amount = price * quantity
            net += -(amount + commission) if side == "BUY" else amount - commission - tax
        if net:
            Account.objects.filter(broker="paper").update(cash=F("cash") - net)
        Trade.objects.filter(symbol_id=SYMBOL).delete()
        Order.objects.filter(symbol_id=SYMBOL).delete()
        Signal.objects.filter(symbol_id=SYMBOL).delete()
        Strategy.objects.filter(name=STRATEGY).delete()
        Position.objects.filter(symbol_id=SYMBOL).delete()
        Stock.objects.filter(symbol=SYMBOL).delete()
        User.objects.filter(username=USER).delete()


def _vacuum() -> None:
    """The bench inserts and deletes tens of thousands of rows: without this, the dead ones
    (autovacuum comes later) slow the next run's index scans by milliseconds a query."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM ANALYZE orders, order_transitions, trades, signals, positions, accounts"
        )


def _fresh_quote(client, price: int = PRICE) -> None:
    import datetime as dt

    from marketdata.keys import quote_key

    client.hset(
        quote_key(SYMBOL),
        mapping={
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "open": str(price),
            "high": str(price),
            "low": str(price),
            "close": str(price),
            "volume": "1",
            "prev_close": str(PRICE),
            "change": str(price - PRICE),
            "change_rate": "0.00",
            "upper_limit": "91000",
            "lower_limit": "49000",
        },
    )


# --- 1. floors ------------------------------------------------------------------------------------


async def floors(count: int) -> None:
    from channels.layers import get_channel_layer

    from qbsite import events

    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = "bench.floor"
    await layer.group_add(group, channel)
    await layer.group_add(events.group_name("risk_alert"), channel)
    message = {"type": "event.message", "event": {"n": 0}}

    async def timed(send) -> list[float]:
        for _ in range(100):
            await send()
            await layer.receive(channel)
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await send()
            await layer.receive(channel)
            samples.append(time.perf_counter() - start)
        return samples

    _figures("floor: layer send -> receive", await timed(lambda: layer.send(channel, message)))
    _figures(
        "floor: layer group_send -> receive", await timed(lambda: layer.group_send(group, message))
    )
    _figures(
        "floor: apublish (Pub/Sub + group) -> receive",
        await timed(lambda: events.apublish("risk_alert", {"n": 0}, source="bench")),
    )
    await layer.group_discard(group, channel)
    await layer.group_discard(events.group_name("risk_alert"), channel)


def commit_floor(count: int) -> None:
    from django.db import connection, transaction

    from trading.models import Account

    pk = Account.objects.get(broker="paper").pk
    samples = []
    for i in range(count + 50):
        start = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE accounts SET updated_at = now() WHERE id = %s", [pk])
        if i >= 50:
            samples.append(time.perf_counter() - start)
    _figures("floor: PostgreSQL commit (UPDATE one row)", samples)


async def skeleton_floor(count: int, *, hops: bool = True) -> None:
    """The chain with every engine's logic taken out: what the design costs on this machine.

    The tick's write (one HSET), then two stages like the strategy and orders engines: each
    receives on its channel (a group send, as the events go), hops to a database thread
    (database_sync_to_async, as the engines do), commits one UPDATE, and the first one
    publishes to the second (Pub/Sub mirror + group send: events.apublish). t0 = before the
    HSET; end = the second commit done. The real chain adds to this the collector's candle,
    the strategy, sizing, the order, its checks and its transitions.

    hops=False: the same without the channel layer (the stages hand over through in-process
    queues, nothing published): what a design without the two hops would start from."""
    import redis.asyncio
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer
    from django.conf import settings
    from django.db import connection, transaction

    from qbsite import events
    from trading.models import Account

    layer = get_channel_layer()
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    pk = await database_sync_to_async(lambda: Account.objects.get(broker="paper").pk)()
    first, second = "bench.skeleton.first", "bench.skeleton.second"
    inboxes = {first: asyncio.Queue(), second: asyncio.Queue()}
    if hops:
        await layer.group_add(events.group_name("candle_closed"), first)
        await layer.group_add(events.group_name("trading_signal"), second)

    async def receive(channel: str) -> None:
        await (layer.receive(channel) if hops else inboxes[channel].get())

    async def hand_over(event_type: str, channel: str) -> None:
        if hops:
            await events.apublish(event_type, {"symbol": SYMBOL}, source="bench")
        else:
            inboxes[channel].put_nowait(event_type)

    @database_sync_to_async
    def commit() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE accounts SET updated_at = now() WHERE id = %s", [pk])

    done: asyncio.Queue = asyncio.Queue()

    async def stage_one() -> None:
        while True:
            await receive(first)
            await commit()
            await hand_over("trading_signal", second)

    async def stage_two() -> None:
        while True:
            await receive(second)
            await commit()
            done.put_nowait(time.perf_counter())

    tasks = [asyncio.create_task(stage_one()), asyncio.create_task(stage_two())]
    samples = []
    try:
        for i in range(count + 50):
            start = time.perf_counter()
            await client.hset("bench:skeleton", mapping={"close": str(PRICE), "n": str(i)})
            await hand_over("candle_closed", first)
            end = await asyncio.wait_for(done.get(), 10)
            if i >= 50:
                samples.append(end - start)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if hops:
            await layer.group_discard(events.group_name("candle_closed"), first)
            await layer.group_discard(events.group_name("trading_signal"), second)
        await client.delete("bench:skeleton")
        await client.aclose()
    if hops:
        _figures("floor: chain skeleton (2 hops, 2 commits)", samples)
    else:
        _figures("  the same without the channel layer", samples)


# --- 2. tick -> order -> position ---------------------------------------------------------------


class QueueFeed:
    """The collector's feed: ticks the bench puts in, on a clock that is the newest tick's."""

    name = "bench"

    def __init__(self, start) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.clock = start

    @property
    def symbols(self):
        return [SYMBOL]

    def now(self):
        return self.clock

    def reference_prices(self):
        from decimal import Decimal

        return {SYMBOL: Decimal(PRICE)}

    async def batches(self):
        while True:
            yield await self.queue.get()

    async def close(self):
        pass


class Listener(threading.Thread):
    """Pub/Sub client on its own thread: (perf_counter at arrival, event type) per event."""

    def __init__(self, url: str, kinds) -> None:
        super().__init__(daemon=True)
        import redis

        from qbsite import events

        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(*(events.pubsub_channel(k) for k in kinds))
        for _ in kinds:
            self.pubsub.get_message(timeout=5)
        self.arrivals: queue.Queue = queue.Queue()

    def run(self) -> None:
        import redis

        try:
            for message in self.pubsub.listen():
                if message["type"] == "message":
                    envelope = json.loads(message["data"])
                    # Pub/Sub is server-wide (not per database): other programs' events too.
                    if envelope["data"].get("symbol") != SYMBOL:
                        continue
                    self.arrivals.put(
                        (time.perf_counter(), envelope["event_type"], envelope["data"])
                    )
        except (redis.ConnectionError, OSError, ValueError):
            return  # closed at the end of the run

    def next(self, kind: str, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, event_type, data = self.arrivals.get(
                    timeout=max(0.01, deadline - time.monotonic())
                )
            except queue.Empty:
                raise RuntimeError(f"no {kind} event within {timeout} s") from None
            if event_type == "order_rejected":
                raise RuntimeError(f"an order was denied or rejected: {data}")
            if event_type == kind:
                return at, data


async def chain(candles: int, warmup: int) -> None:
    import datetime as dt
    from decimal import Decimal

    from django.conf import settings

    from marketdata.engines.collector import CollectorEngine
    from marketdata.types import Tick
    from qbsite.engines import Runtime
    from trading.engines.orders import OrdersEngine
    from trading.engines.strategy import StrategyEngine

    # 09:01 KST on a trading day: one tick a minute stays inside the continuous session.
    start = dt.datetime(2026, 11, 25, 0, 1, 1, tzinfo=dt.UTC)
    feed = QueueFeed(start)
    engines = [CollectorEngine(feed=feed), StrategyEngine(), OrdersEngine()]
    runtime = Runtime(engines, heartbeat_seconds=0.2)
    listener = Listener(
        settings.REDIS_URL,
        ("candle_closed", "trading_signal", "order_placed", "position_updated", "order_rejected"),
    )
    listener.start()
    task = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        deadline = time.monotonic() + 60
        while True:  # every engine ready (setup done, groups joined)
            beats = [await client.hget(f"heartbeat:{e.name}", "ready") for e in engines]
            if all(b == b"1" for b in beats):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"engines not ready: {beats}")
            await asyncio.sleep(0.05)
        await client.aclose()

        to_order, to_position = [], []
        walls: dict = {}  # candle open time -> wall clock of its closing tick
        seen: dict[str, list[float]] = {
            "candle_closed event (Pub/Sub)": [],
            "trading_signal event (Pub/Sub)": [],
        }
        for step in range(warmup + candles):
            moment = start + dt.timedelta(minutes=step)
            price = Decimal(PRICE + 100 * (step % 2))
            tick = Tick(symbol=SYMBOL, time=moment, price=price, volume=1)
            feed.clock = moment + dt.timedelta(milliseconds=1)
            t0 = time.perf_counter()
            if step >= warmup:  # the candle this tick closes opened a minute before, on :00
                closes = (moment - dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
                walls[closes] = dt.datetime.now(dt.UTC)
            feed.queue.put_nowait([tick])
            if step == 0:
                await asyncio.sleep(0.5)  # the first candle opens; the market clock is seen
                continue
            candle_at, _ = await asyncio.to_thread(listener.next, "candle_closed")
            signal_at, _ = await asyncio.to_thread(listener.next, "trading_signal")
            placed_at, placed = await asyncio.to_thread(listener.next, "order_placed")
            position_at, _ = await asyncio.to_thread(listener.next, "position_updated")
            if step >= warmup:
                to_order.append(placed_at - t0)
                to_position.append(position_at - t0)
                seen["candle_closed event (Pub/Sub)"].append(candle_at - t0)
                seen["trading_signal event (Pub/Sub)"].append(signal_at - t0)
            if placed["status"] != "SUBMITTED":
                raise RuntimeError(f"unexpected order event: {placed}")
        _figures("tick -> order submitted (order_placed)", to_order)
        _figures("tick -> position updated (position_updated)", to_position)
        for name, samples in seen.items():
            ms = statistics.median(samples) * 1000
            print(f"  stage p50 from the tick: {name:<34} {ms:7.3f} ms")
        await asyncio.to_thread(_stages, walls)
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, 30)
        listener.pubsub.close()


def _stages(walls: dict) -> None:
    """Where the time goes, from the rows' own (wall-clock) stamps: p50 from the tick to each."""
    from trading.models import OrderTransition, Signal

    stages: dict[str, list[float]] = {}
    signals = Signal.objects.filter(strategy__name=STRATEGY, time__in=list(walls))
    for signal in signals.select_related("order"):
        t0 = walls[signal.time]
        marks = [("signal stored (created_at)", signal.created_at)]
        order = getattr(signal, "order", None)
        if order is not None:
            marks.append(("order created (created_at)", order.created_at))
            for status, at in OrderTransition.objects.filter(order=order).values_list(
                "to_status", "at"
            ):
                if status in ("SUBMITTED", "ACCEPTED"):
                    marks.append((f"order {status} (transition at)", at))
        for name, at in marks:
            stages.setdefault(name, []).append((at - t0).total_seconds())
    for name, samples in stages.items():
        ms = statistics.median(samples) * 1000
        print(f"  stage p50 from the tick: {name:<34} {ms:7.3f} ms")


# --- 3. throughput --------------------------------------------------------------------------------


def _order_body(n: int, turn: int | None = None) -> dict:
    """Market order n: a buy on even turns, a sell on odd ones (turn = n unless given: each
    client alternates on its own, so it never sells a share it has not bought)."""
    turn = n if turn is None else turn
    return {
        "client_order_id": f"bench-{n}",
        "symbol": SYMBOL,
        "side": "BUY" if turn % 2 == 0 else "SELL",
        "order_type": "MARKET",
        "quantity": 1,
    }


def _check(order_status: str, n: int) -> None:
    if order_status != "FILLED":
        raise RuntimeError(f"bench order {n} ended {order_status}, not FILLED")


def throughput(orders: int, connections: int, token: str, redis_client) -> None:
    from django.test import Client

    from trading import oms

    counter = iter(range(10**9))

    _fresh_quote(redis_client)
    started = time.perf_counter()
    for _ in range(orders):
        n = next(counter)
        order, _ = oms.order_place(**_order_body(n), actor="bench")
        _check(order.status, n)
    _rate("oms.order_place (in process, sequential)", orders, time.perf_counter() - started)

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="localhost")
    _fresh_quote(redis_client)
    started = time.perf_counter()
    for _ in range(orders):
        n = next(counter)
        response = client.post("/api/v1/orders/", _order_body(n), content_type="application/json")
        if response.status_code != 201:
            raise RuntimeError(f"API answered {response.status_code}: {response.content[:300]}")
        _check(response.json()["status"], n)
    _rate("API, Django test client (sequential)", orders, time.perf_counter() - started)

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-keep-alive",
            "120",
            "qbsite.asgi:application",
        ],
        cwd=BASE_DIR,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {
        "Authorization": f"Token {token}",
        "Host": "localhost",
        "Content-Type": "application/json",
    }
    lock = threading.Lock()

    def post(conn, turn: int) -> None:
        with lock:
            n = next(counter)
        conn.request("POST", "/api/v1/orders/", json.dumps(_order_body(n, turn)), headers)
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 201:
            raise RuntimeError(f"uvicorn answered {reply.status}: {body[:300]}")
        _check(json.loads(body)["status"], n)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/api/v1/orders/", headers=headers)
                probe.getresponse().read()
                probe.close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.2)
        for clients in sorted({1, connections}):
            _fresh_quote(redis_client)
            conns = [
                http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)
            ]
            for conn in conns:  # warm the keep-alive connections and the server
                for turn in range(20):
                    post(conn, turn)
            each = orders // clients
            errors = []

            def work(conn, errors=errors, each=each):
                try:
                    for turn in range(each):
                        post(conn, turn)
                except Exception as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(c,)) for c in conns]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            if errors:
                raise errors[0]
            _rate(f"API, uvicorn, {clients} keep-alive connection(s)", each * clients, elapsed)
            for conn in conns:
                conn.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=300, help="measured ticks (<= 330)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--floor-samples", type=int, default=2000)
    parser.add_argument("--db", type=int, default=9, help="Redis database (flushed)")
    args = parser.parse_args()
    if args.candles + args.warmup > 350:
        parser.error("--candles + --warmup must stay within the session (at most 350 minutes)")

    from qbsite.env import redis_url_with_db

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
    os.environ["DEBUG"] = "false"
    os.environ["API_THROTTLE_USER"] = "100000000/min"
    if not os.environ.get("REDIS_URL"):
        print("REDIS_URL is not set (run through `python -m qbsite.launcher exec`)")
        return 1
    os.environ["REDIS_URL"] = redis_url_with_db(os.environ["REDIS_URL"], args.db)
    import django

    django.setup()
    import redis
    from django.conf import settings

    _register_strategy()
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    _, token = _setup_rows()
    _vacuum()
    # The risk rules run on every order (each to its end), with limits that deny nothing: the
    # bench orders a share a candle on one symbol, which the default limits (60 s between
    # orders on a symbol, 20 trades a day) would deny. Put back at the end.
    from risk import services as risk_services
    from risk.testing import PERMISSIVE

    limits = risk_services.limits_get()
    saved = {name: getattr(limits, name) for name in PERMISSIVE}
    risk_services.limits_update(actor="bench", reason="trading latency bench", **PERMISSIVE)
    try:
        where = settings.REDIS_URL.split("@")[-1]
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, redis {where}")
        asyncio.run(floors(args.floor_samples))
        commit_floor(args.floor_samples // 4)
        asyncio.run(skeleton_floor(args.floor_samples // 4))
        asyncio.run(skeleton_floor(args.floor_samples // 4, hops=False))
        asyncio.run(chain(args.candles, args.warmup))
        client.flushdb()
        throughput(args.orders, args.connections, token, client)
    finally:
        client.flushdb()
        from django.db import connections

        connections.close_all()
        risk_services.limits_update(actor="bench", reason="trading latency bench done", **saved)
        _cleanup_rows()
        _vacuum()
    return 0


if __name__ == "__main__":
    sys.exit(main())
