"""Archiver: rows/s from the Redis candle stream into market_data, against a raw COPY, same run.

- baseline: `COPY market_data (...) FROM STDIN (FORMAT csv)` of the same candles, already as
  CSV text in memory (no Redis at all);
- QB: marketdata.archiver.Archiver.run(until_empty=True) over a stream holding the same candles
  as the collector writes them ({"c": candle JSON, "s": symbol}): XREADGROUP, parse and check,
  the COPY-based upsert, commit, XACK + XDEL, batch after batch, until the stream is empty
  (with the archiver's default overlap: the next batch read and the previous one acknowledged
  while the current one is written).
Each round TRUNCATEs market_data and refills the stream (not timed); rounds alternate; medians.

Uses a database of its own (see bench/backfill.py) and Redis database 12 of REDIS_URL's server
(only the stream keys, deleted at the end). Run:
    DATABASE_URL=... REDIS_URL=... python bench/archiver.py [rows] [rounds] [batch]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backfill import bench_database, csv_text, make_candles, raw_copy_csv, truncate

REDIS_DB = 12


def fill_stream(client, candles) -> None:
    from marketdata.keys import CANDLE_STREAM
    from marketdata.types import Candle

    for start in range(0, len(candles), 10_000):
        with client.pipeline(transaction=False) as pipe:
            for row in candles[start : start + 10_000]:
                candle = Candle(*row)
                pipe.xadd(CANDLE_STREAM, {"c": candle.to_json(), "s": candle.symbol})
            pipe.execute()


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    with bench_database("qb_bench_archiver"):
        import tempfile

        import redis
        from django.conf import settings

        from marketdata.archiver import DEAD_STREAM, Archiver
        from marketdata.keys import CANDLE_STREAM
        from qbsite.env import redis_url_with_db

        client = redis.Redis.from_url(redis_url_with_db(settings.REDIS_URL, REDIS_DB))
        client.delete(CANDLE_STREAM, DEAD_STREAM)
        candles = make_candles(rows)
        rows = len(candles)
        raw, ours, cpu = [], [], []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "candles.csv"
                path.write_text(csv_text(candles))
                for _ in range(rounds):
                    truncate()
                    raw.append(raw_copy_csv(path))
                    truncate()
                    client.delete(CANDLE_STREAM)
                    fill_stream(client, candles)
                    archiver = Archiver(redis_client=client, batch_size=batch, block_ms=0)
                    started, cpu_started = time.perf_counter(), time.process_time()
                    archiver.run(until_empty=True)
                    ours.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - cpu_started)
                    stats = archiver.stats()
                    assert stats["archived"] == rows and stats["lag"] == 0, stats
                    archiver._disconnect()
        finally:
            client.delete(CANDLE_STREAM, DEAD_STREAM)
        raw_rate = rows / statistics.median(raw)
        our_rate = rows / statistics.median(ours)
        load = os.getloadavg()
        print(f"archiver bench: {rows} 1m candles, 500 symbols, batches of {batch} entries,")
        print(f"  {rounds} rounds (median), {os.cpu_count()} CPUs, load average {load[0]:.2f}")
        print(f"raw COPY csv into market_data:          {raw_rate:10.0f} rows/s")
        print(f"QB archiver (stream -> table, acked):   {our_rate:10.0f} rows/s")
        cpu_per_row = statistics.median(cpu) / rows * 1e6
        print(f"  archiver process CPU per row:         {cpu_per_row:10.1f} us")
        print(f"ratio QB / raw COPY:                    {our_rate / raw_rate:10.2f}")


if __name__ == "__main__":
    main()
