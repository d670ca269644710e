"""Redis memory of the market-data buffer for the full KRX universe.

    python bench/redis_memory.py [--symbols 2500] [--candles 200] [--db 13]

Fills a dedicated database of the running Redis with what the collector and the indicators
engine keep: per symbol a `market:{symbol}` quote hash, `candles:{symbol}:1m` with 200 one-minute
candles in the contract JSON (realistic prices and volumes), and an `indicators:{symbol}` hash.
Measures used_memory before/after (MB, bytes per candle), first with the server's current list
settings (the baseline), then with list-compress-depth 1 and list-max-listpack-size -1 (what
marketdata/buffer.py relies on), set by CONFIG SET for the run and restored afterwards.
Also reports all five default intervals full (5 x 200 candles per symbol), the steady state
after some weeks. The database is flushed before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {"list-compress-depth": "1", "list-max-listpack-size": "-1"}


def candle_json(when: dt.datetime, price: int, volume: int, interval: str) -> str:
    from decimal import Decimal

    from marketdata.types import Candle

    p = Decimal(price)
    return Candle("x", interval, when, p, p + 100, p - 100, p + 50, volume).to_json()


def fill(client, symbols: int, candles: int, intervals: tuple[str, ...], seed: int = 1) -> None:
    rng = random.Random(seed)
    start = dt.datetime(2026, 3, 4, 0, 0, tzinfo=dt.UTC)
    for n in range(symbols):
        symbol = f"{n:06d}"
        price = rng.randint(1_000, 300_000)
        pipe = client.pipeline(transaction=False)
        for interval in intervals:
            rows = [
                candle_json(
                    start + dt.timedelta(minutes=i),
                    price + rng.randint(-50, 50) * 10,
                    rng.randint(100, 900_000),
                    interval,
                )
                for i in range(candles)
            ]
            for row in rows:  # one at a time, as the collector does (LPUSH + LTRIM)
                pipe.lpush(f"candles:{symbol}:{interval}", row)
        pipe.hset(
            f"market:{symbol}",
            mapping={
                "timestamp": "2026-03-04T06:30:00Z",
                "open": price,
                "high": price + 500,
                "low": price - 500,
                "close": price,
                "volume": rng.randint(10_000, 9_000_000),
                "prev_close": price - 100,
                "change": 100,
                "change_rate": "0.15",
                "upper_limit": price * 13 // 10,
                "lower_limit": price * 7 // 10,
            },
        )
        pipe.hset(
            f"indicators:{symbol}",
            mapping={
                "sma_20": f"{price + rng.random():.6f}",
                "rsi": f"{rng.uniform(0, 100):.6f}",
                "macd": f"{rng.uniform(-500, 500):.6f}",
                "macd_signal": f"{rng.uniform(-500, 500):.6f}",
                "macd_hist": f"{rng.uniform(-50, 50):.6f}",
                "updated_at": "2026-03-04T06:30:00Z",
            },
        )
        pipe.execute()


def measure(client, symbols, candles, intervals) -> float:
    client.flushdb()
    before = client.info("memory")["used_memory"]
    fill(client, symbols, candles, intervals)
    after = client.info("memory")["used_memory"]
    client.flushdb()
    return after - before


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=2500)
    parser.add_argument("--candles", type=int, default=200)
    parser.add_argument("--db", type=int, default=13)
    args = parser.parse_args()
    import redis

    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0").rsplit("/", 1)[0]
    client = redis.Redis.from_url(f"{url}/{args.db}")
    saved = {name: client.config_get(name)[name] for name in SETTINGS}
    print(
        f"redis {client.info('server')['redis_version']}, {args.symbols:,} symbols x "
        f"{args.candles} candles; server list settings {saved}"
    )
    n = args.symbols * args.candles
    try:
        used = measure(client, args.symbols, args.candles, ("1m",))
        print(
            f"baseline (server settings): {used / 1e6:.1f} MB, {used / n:.0f} bytes/candle "
            "(quotes and indicators included)"
        )
        for name, value in SETTINGS.items():
            client.config_set(name, value)
        used = measure(client, args.symbols, args.candles, ("1m",))
        print(
            f"list-compress-depth 1, list-max-listpack-size -1: {used / 1e6:.1f} MB, "
            f"{used / n:.0f} bytes/candle (quotes and indicators included)"
        )
        five = ("1m", "5m", "15m", "1h", "1d")
        used = measure(client, args.symbols, args.candles, five)
        print(
            f"same settings, all 5 intervals full: {used / 1e6:.1f} MB, "
            f"{used / (n * 5):.0f} bytes/candle"
        )
    finally:
        for name, value in saved.items():
            client.config_set(name, value)
        client.flushdb()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
