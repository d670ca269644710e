"""Archiver: rows/s from the Redis candle stream into market_data, against a raw COPY, same run.

- baseline: `COPY market_data (...) FROM STDIN (FORMAT csv)` of the same candles, already as
  CSV text in memory (no Redis at all);
- QB: marketdata.archiver.Archiver.run(until_empty=True) over a stream holding the same candles
  as the collector writes them: packed, up to 1,000 candles an entry (marketdata.buffer
  STREAM_PACK_MAX; the collector packs the candles it closes in one write, 2,500 at each minute
  for the full KRX universe): XREADGROUP, check, the COPY-based upsert, commit, XACK + trim,
  batch after batch, until the stream is empty (with the archiver's default overlap: the next
  batch read and the previous one acknowledged while the current one is written);
- the same with one entry per candle ({"c": JSON, "s": symbol}, the format before packing,
  still read), for comparison.
Each round TRUNCATEs market_data and refills the stream (not timed); rounds alternate; medians.

Uses a database of its own (see bench/backfill.py) and Redis database 12 of REDIS_URL's server
(only the stream keys, deleted at the end). Run:
    DATABASE_URL=... REDIS_URL=... python bench/archiver.py [rows] [rounds] [batch]
`batch`: entries a round (default the archiver's, 20; the per-candle run reads 1,000 x that).
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


def fill_stream(client, candles, *, packed: bool = True) -> None:
    from marketdata.buffer import STREAM_PACK_FIELD, stream_line, stream_packs
    from marketdata.keys import CANDLE_STREAM
    from marketdata.types import Candle

    for start in range(0, len(candles), 10_000):
        with client.pipeline(transaction=False) as pipe:
            chunk = [Candle(*row) for row in candles[start : start + 10_000]]
            if packed:
                lines = [stream_line(c.to_json(), c.symbol) for c in chunk]
                for pack in stream_packs(lines):
                    pipe.xadd(CANDLE_STREAM, {STREAM_PACK_FIELD: pack})
            else:
                for candle in chunk:
                    pipe.xadd(CANDLE_STREAM, {"c": candle.to_json(), "s": candle.symbol})
            pipe.execute()


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    with bench_database("qb_bench_archiver"):
        import tempfile

        import redis
        from django.conf import settings

        from marketdata.archiver import DEAD_STREAM, Archiver
        from marketdata.buffer import STREAM_PACK_MAX
        from marketdata.keys import CANDLE_STREAM
        from qbsite.env import redis_url_with_db

        client = redis.Redis.from_url(redis_url_with_db(settings.REDIS_URL, REDIS_DB))
        client.delete(CANDLE_STREAM, DEAD_STREAM)
        candles = make_candles(rows)
        rows = len(candles)
        raw: list[float] = []
        runs = {"packed": ([], []), "per candle": ([], [])}

        def archive(packed: bool) -> None:
            truncate()
            client.delete(CANDLE_STREAM)
            fill_stream(client, candles, packed=packed)
            size = batch if packed else batch * STREAM_PACK_MAX
            archiver = Archiver(redis_client=client, batch_size=size, block_ms=0)
            started, cpu_started = time.perf_counter(), time.process_time()
            archiver.run(until_empty=True)
            times, cpu = runs["packed" if packed else "per candle"]
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            stats = archiver.stats()
            assert stats["archived"] == rows and stats["lag"] == 0, stats
            archiver._disconnect()

        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "candles.csv"
                path.write_text(csv_text(candles))
                for _ in range(rounds):
                    truncate()
                    raw.append(raw_copy_csv(path))
                    archive(packed=True)
                    archive(packed=False)
        finally:
            client.delete(CANDLE_STREAM, DEAD_STREAM)
        raw_rate = rows / statistics.median(raw)
        load = os.getloadavg()
        print(f"archiver bench: {rows} 1m candles, 500 symbols, {batch} entries a round,")
        print(f"  {rounds} rounds (median), {os.cpu_count()} CPUs, load average {load[0]:.2f}")
        print(f"raw COPY csv into market_data:               {raw_rate:10.0f} rows/s")
        for name, (times, cpu) in runs.items():
            rate = rows / statistics.median(times)
            cpu_per_row = statistics.median(cpu) / rows * 1e6
            print(
                f"QB archiver, {name + ' entries':<20} {rate:10.0f} rows/s, ratio to raw COPY "
                f"{rate / raw_rate:.2f}; archiver CPU {cpu_per_row:.1f} us a row"
            )


if __name__ == "__main__":
    main()
