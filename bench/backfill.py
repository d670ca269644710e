"""Backfill: rows/s of `manage.py backfill`'s path against a raw COPY of the same file, same run.

Both load one CSV of N one-minute candles into an empty market_data (TRUNCATE before each):
- baseline: `COPY market_data (...) FROM STDIN (FORMAT csv, HEADER)` fed the file's bytes (the
  server parses; no checks beyond the table's own);
- QB: marketdata.loaders.candles_backfill_csv(), what the command runs: Python parses and
  checks every line, then the COPY-based idempotent upsert (marketdata.copy), one transaction;
- QB re-run: the same file again over the loaded table (every row found equal: the idempotent
  path through the temporary table), as a resumed run would do.
Rounds alternate baseline and QB; the median of each is printed, and the ratio.

Uses a database of its own (created, migrated with `manage.py migrate` in a subprocess, dropped
at the end) on the server of DATABASE_URL; never touches QB's database. Run:
    DATABASE_URL=postgres://... python bench/backfill.py [rows] [rounds]
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def bench_database(name: str):
    """Create database `name` next to DATABASE_URL's, migrate it, point Django at it, drop it."""
    import psycopg
    from psycopg import sql

    base = os.environ.get("DATABASE_URL")
    if not base:
        sys.exit("DATABASE_URL is not set (the server to benchmark on).")
    # A SIGTERM (make bench interrupted) still drops the database: exit through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = urlsplit(base)
    url = parts._replace(path=f"/{name}").geturl()
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        env = {**os.environ, "DATABASE_URL": url}
        env.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        yield url
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_candles(rows: int, symbols: int = 500, seed: int = 1) -> list[tuple]:
    """(symbol, interval, time, open, high, low, close, volume): a random walk per symbol."""
    import datetime as dt
    from decimal import Decimal

    rng = random.Random(seed)
    per_symbol = rows // symbols
    start = dt.datetime(2024, 1, 2, 0, 0, tzinfo=dt.UTC)
    minutes = [start + dt.timedelta(minutes=m) for m in range(per_symbol)]
    out = []
    for n in range(symbols):
        symbol = f"{n:06d}"
        price = rng.randint(100, 2000) * 50
        for moment in minutes:
            close = max(1000, price + rng.randint(-4, 4) * 50)
            high = max(price, close) + rng.randint(0, 3) * 50
            low = min(price, close) - rng.randint(0, 3) * 50
            out.append(
                (
                    symbol,
                    "1m",
                    moment,
                    Decimal(price),
                    Decimal(high),
                    Decimal(low),
                    Decimal(close),
                    rng.randint(0, 50_000),
                )
            )
            price = close
    return out


def csv_text(candles: list[tuple]) -> str:
    lines = ["symbol,interval,time,open,high,low,close,volume"]
    lines += [
        f"{s},{i},{t.isoformat()},{o},{h},{lo},{c},{v}" for s, i, t, o, h, lo, c, v in candles
    ]
    return "\n".join(lines) + "\n"


def truncate() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE market_data")
        cur.execute("CHECKPOINT")  # start each round from the same state


def raw_copy_csv(path: Path) -> float:
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        copy_sql = (
            "COPY market_data (symbol, interval, time, open, high, low, close, volume)"
            " FROM STDIN (FORMAT csv, HEADER true)"
        )
        with cur.cursor.copy(copy_sql) as copy, open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
    return time.perf_counter() - started


def qb_backfill(path: Path) -> tuple[float, object]:
    from marketdata.loaders import candles_backfill_csv

    started = time.perf_counter()
    result = candles_backfill_csv(path)
    elapsed = time.perf_counter() - started
    assert result.loaded and not result.bad, result.bad[:3]
    return elapsed, result


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with bench_database("qb_bench_backfill"), tempfile.TemporaryDirectory() as tmp:
        from django.db import connection

        candles = make_candles(rows)
        path = Path(tmp) / "candles.csv"
        path.write_text(csv_text(candles))
        rows = len(candles)
        raw, ours, rerun = [], [], []
        for _ in range(rounds):
            truncate()
            raw.append(raw_copy_csv(path))
            truncate()
            elapsed, result = qb_backfill(path)
            assert result.written.inserted == rows, result.written
            ours.append(elapsed)
            elapsed, result = qb_backfill(path)
            assert result.written.unchanged == rows, result.written
            rerun.append(elapsed)
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM market_data")
            assert cur.fetchone()[0] == rows
        raw_rate = rows / statistics.median(raw)
        our_rate = rows / statistics.median(ours)
        rerun_rate = rows / statistics.median(rerun)
        load = os.getloadavg()
        print(f"backfill bench: {rows} 1m candles, 500 symbols, {path.stat().st_size} bytes CSV,")
        print(f"  {rounds} rounds (median), {os.cpu_count()} CPUs, load average {load[0]:.2f}")
        print(f"raw COPY csv into market_data:        {raw_rate:10.0f} rows/s")
        print(f"QB backfill (empty table):            {our_rate:10.0f} rows/s")
        print(f"QB backfill re-run (all unchanged):   {rerun_rate:10.0f} rows/s")
        print(f"ratio QB / raw COPY (first load):     {our_rate / raw_rate:10.2f}")
        print(f"ratio QB re-run / raw COPY:           {rerun_rate / raw_rate:10.2f}")


if __name__ == "__main__":
    main()
