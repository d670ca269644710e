"""Indicators: candles/s through the engine's plain function, against raw redis-py in the same run.

Figures, one a line:
- pure computation: IndicatorState.update() per second (no I/O);
- engine path: indicators_on_candle_closed() per second (state update, the hash written in one
  MULTI, indicators_updated published on Pub/Sub and the Channels group), one candle at a time;
- baseline: the same Redis work done by hand with redis.asyncio (MULTI HSET + PUBLISH, then a
  group_send), so the ratio shows what QB's code adds on top of the round trips.

Writes only `indicators:BNnnnn` keys (deleted at the end). Run:
    DJANGO_SETTINGS_MODULE=qbsite.settings python bench/indicators.py [candles]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import sys
import time
from decimal import Decimal


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
    import django

    django.setup()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    asyncio.run(run(count))


async def run(count: int) -> None:
    import redis.asyncio
    from channels.layers import get_channel_layer
    from django.conf import settings

    from marketdata.engines.indicators import indicators_on_candle_closed
    from marketdata.indicators import IndicatorState
    from marketdata.types import Candle

    symbols = [f"BN{n:04d}" for n in range(100)]
    rng = random.Random(1)
    closes = [70_000 + rng.randint(-50, 50) * 10 for _ in range(count)]

    state = IndicatorState()
    started = time.perf_counter()
    for close in closes:
        state.update(close)
    pure = count / (time.perf_counter() - started)

    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    layer = get_channel_layer()
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    candles = [
        Candle(
            symbol=symbols[i % len(symbols)],
            interval="1m",
            time=start + dt.timedelta(minutes=i // len(symbols)),
            open=Decimal(c),
            high=Decimal(c),
            low=Decimal(c),
            close=Decimal(c),
            volume=1,
        )
        for i, c in enumerate(closes)
    ]
    states = {(s, "1m"): IndicatorState() for s in symbols}
    try:
        started = time.perf_counter()
        for candle in candles:
            await indicators_on_candle_closed(candle, states=states, redis=client)
        engine = count / (time.perf_counter() - started)

        started = time.perf_counter()
        for candle in candles:
            pipe = client.pipeline(transaction=True)
            pipe.hset(f"indicators:{candle.symbol}", mapping={"sma_20": "1.5", "rsi": "50.0"})
            await pipe.execute()
            text = json.dumps({"symbol": candle.symbol, "values": [1.5, 50.0]})
            await client.publish("events:indicators_updated", text)
            await layer.group_send("events.indicators_updated", {"type": "event.message"})
        baseline = count / (time.perf_counter() - started)
    finally:
        await client.delete(*(f"indicators:{s}" for s in symbols))
        await client.aclose()

    print(f"candles: {count} over {len(symbols)} symbols, python {sys.version.split()[0]}")
    print(f"IndicatorState.update (pure): {pure:,.0f} closes/s")
    print(f"indicators_on_candle_closed: {engine:,.0f} candles/s")
    print(f"baseline raw redis.asyncio MULTI HSET + PUBLISH + group_send: {baseline:,.0f} /s")
    print(f"ratio engine / baseline: {engine / baseline:.2f}")
    print(f"a full KRX minute (2,500 symbols) takes {2_500 / engine:.2f} s at this rate")


if __name__ == "__main__":
    main()
