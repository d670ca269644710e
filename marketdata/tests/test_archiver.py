"""The archiver against the real Redis (test database) and PostgreSQL (test database).

The archiver writes on a connection of its own and commits, so these tests use
django_db(transaction=True) and read committed rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from marketdata import buffer
from marketdata.archiver import (
    DEAD_STREAM,
    EXIT_AFTER_COMMIT_ENV,
    EXIT_AFTER_PREFETCH_ENV,
    Archiver,
)
from marketdata.engines.archiver import ArchiverEngine
from marketdata.keys import ARCHIVER_GROUP, CANDLE_STREAM
from marketdata.models import MarketData
from marketdata.types import Candle
from ops.logging import SystemLogHandler
from ops.models import SystemLog
from qbsite.testing import closed_port
from qbsite.testing import database_conninfo as db_url

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2024, 3, 4, 0, 0, tzinfo=dt.UTC)  # 09:00 KST


def candle(i: int, symbol: str = "005930", price: int = 70_000, interval: str = "1m") -> Candle:
    return Candle(
        symbol=symbol,
        interval=interval,
        time=T0 + dt.timedelta(minutes=i),
        open=Decimal(price),
        high=Decimal(price + 200),
        low=Decimal(price - 100),
        close=Decimal(price + 100),
        volume=1000 + i,
    )


def push(redis_client, candles) -> list[bytes]:
    pipe = redis_client.pipeline()
    for c in candles:
        pipe.xadd(CANDLE_STREAM, {"c": c.to_json(), "s": c.symbol})
    return pipe.execute()


def push_raw(redis_client, fields: dict) -> bytes:
    return redis_client.xadd(CANDLE_STREAM, fields)


def stored() -> dict[tuple, tuple]:
    return {
        (r.symbol, r.interval, r.time): (r.open, r.high, r.low, r.close, r.volume)
        for r in MarketData.objects.all()
    }


def as_row(c: Candle) -> tuple:
    return (c.open, c.high, c.low, c.close, c.volume)


def pending(redis_client) -> int:
    return redis_client.xpending(CANDLE_STREAM, ARCHIVER_GROUP)["pending"]


@pytest.fixture
def make_archiver(redis_client):
    made = []

    def make(**options):
        options.setdefault("database_url", db_url())
        options.setdefault("block_ms", 50)
        # Most tests here push one candle an entry (push(): the format before packing, still
        # read), where a round of the default 20 entries would be 20 candles.
        options.setdefault("batch_size", 20_000)
        archiver = Archiver(**options)
        made.append(archiver)
        return archiver

    yield make
    for archiver in made:
        archiver.close()


def test_a_batch_is_upserted_committed_acknowledged_and_deleted(redis_client, make_archiver):
    candles = [candle(i) for i in range(40)] + [candle(i, symbol="000660") for i in range(10)]
    push(redis_client, candles)
    archiver = make_archiver()

    outcome = archiver.run_once()

    assert (outcome.read, outcome.archived, outcome.acked, outcome.dead) == (50, 50, 50, 0)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert redis_client.xlen(CANDLE_STREAM) == 0  # acknowledged and deleted: no growth
    assert pending(redis_client) == 0
    stats = archiver.stats()
    assert (stats["archived"], stats["lag"], stats["pending"], stats["last_error"]) == (
        50,
        0,
        0,
        None,
    )


def test_a_resent_candle_is_not_stored_twice_and_does_not_overwrite(redis_client, make_archiver):
    archiver = make_archiver()
    first = candle(0)
    push(redis_client, [first])
    archiver.run_once()
    # The same key again with other values (a replay after a crash, or a stale re-send): the
    # stored row wins; the backfill is the tool that corrects history.
    again = candle(0, price=71_000)
    push(redis_client, [again, first])

    outcome = archiver.run_once()

    assert (outcome.archived, outcome.already_stored, outcome.acked) == (0, 2, 2)
    assert stored() == {(first.symbol, first.interval, first.time): as_row(first)}
    assert redis_client.xlen(CANDLE_STREAM) == 0


def run_child(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    child_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "qbsite.settings_test"}
    child_env.pop(EXIT_AFTER_COMMIT_ENV, None)
    child_env.pop(EXIT_AFTER_PREFETCH_ENV, None)
    child_env.update(env or {})
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from marketdata.archiver import main; main()",
            "--database-url",
            db_url(),
            "--redis-url",
            settings.REDIS_URL,
            *args,
        ],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_killed_between_commit_and_ack_the_restart_leaves_each_candle_exactly_once(redis_client):
    candles = [candle(i) for i in range(250)]
    push(redis_client, candles)

    # A real process, killed (os._exit) right after its first commit, before XACK.
    killed = run_child("--batch-size", "100", env={EXIT_AFTER_COMMIT_ENV: "1"})
    assert killed.returncode == 9, killed.stderr
    assert len(stored()) == 100  # committed ...
    assert redis_client.xlen(CANDLE_STREAM) == 250  # ... but nothing acknowledged or deleted
    # The committed batch and the next one, read ahead while the first was written (the
    # overlap): both owned by a consumer that no longer exists.
    assert pending(redis_client) == 200

    # A new process (another pid, another consumer) claims the dead one's entries at once.
    restarted = run_child("--batch-size", "100", "--claim-idle-ms", "0", "--until-empty")
    assert restarted.returncode == 0, restarted.stderr

    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert MarketData.objects.count() == 250
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0


def test_killed_after_reading_ahead_before_the_commit_nothing_is_lost_or_doubled(redis_client):
    candles = [candle(i) for i in range(250)]
    push(redis_client, candles)

    # Killed once batch 2 was read ahead (the overlap) and batch 1 not committed yet.
    killed = run_child("--batch-size", "100", env={EXIT_AFTER_PREFETCH_ENV: "1"})
    assert killed.returncode == 9, killed.stderr
    assert MarketData.objects.count() == 0
    assert redis_client.xlen(CANDLE_STREAM) == 250
    assert pending(redis_client) == 200  # both batches delivered, neither acknowledged

    restarted = run_child("--batch-size", "100", "--claim-idle-ms", "0", "--until-empty")
    assert restarted.returncode == 0, restarted.stderr

    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert MarketData.objects.count() == 250
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0


def test_a_failed_write_drops_the_batch_read_ahead_and_reads_it_again(redis_client, make_archiver):
    candles = [candle(i) for i in range(25)]
    push(redis_client, candles)
    archiver = make_archiver(
        database_url=db_url(host="127.0.0.1", port=str(closed_port())),
        batch_size=10,
        max_backoff=0.05,
    )

    first = archiver.run_once()  # batch 1 read, batch 2 read ahead, the write fails

    assert first.retry_after and first.acked == 0
    assert pending(redis_client) == 20
    archiver.database_url = db_url()
    outcomes = []
    while (outcome := archiver.run_once()).read:
        outcomes.append(outcome)

    # Each entry written once: re-read from the pending list in order, then the rest.
    assert [o.read for o in outcomes] == [10, 10, 5]
    assert sum(o.archived for o in outcomes) == 25
    assert sum(o.already_stored for o in outcomes) == 0
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0


@pytest.mark.parametrize(
    "unreachable",
    [
        pytest.param(lambda: db_url(host="127.0.0.1", port=str(closed_port())), id="closed-port"),
        pytest.param(lambda: db_url(dbname="qb_archiver_no_such_db"), id="no-such-database"),
    ],
)
def test_while_postgresql_is_down_nothing_is_acked_and_the_backlog_drains_later(
    redis_client, make_archiver, capsys, unreachable
):
    candles = [candle(i) for i in range(30)]
    push(redis_client, candles)
    archiver = make_archiver(database_url=unreachable(), max_backoff=0.05)

    outcomes = [archiver.run_once() for _ in range(4)]

    assert all(o.retry_after and o.acked == 0 and o.archived == 0 for o in outcomes)
    assert MarketData.objects.count() == 0
    assert redis_client.xlen(CANDLE_STREAM) == 30  # none lost
    assert pending(redis_client) == 30  # none acknowledged
    assert archiver.stats()["down"] == ["postgresql"]
    assert archiver.stats()["last_error"].startswith("postgresql: ")
    err = capsys.readouterr().err
    assert err.count("postgresql unavailable") == 1  # once per outage, not per retry

    archiver.database_url = db_url()  # the database is back
    more = [candle(i) for i in range(30, 40)]
    push(redis_client, more)
    while archiver.run_once().read:
        pass

    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles + more}
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0
    assert archiver.stats()["down"] == []
    assert "postgresql is back" in capsys.readouterr().err


def test_the_backoff_doubles_up_to_its_cap(redis_client, make_archiver):
    push(redis_client, [candle(0)])
    archiver = make_archiver(
        database_url=db_url(host="127.0.0.1", port=str(closed_port())), max_backoff=3
    )
    assert [archiver.run_once().retry_after for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]


def test_invalid_candles_go_to_the_dead_letter_stream_and_system_logs(redis_client, make_archiver):
    good = [candle(0), candle(1)]
    push(redis_client, good[:1])
    bad_ids = [
        push_raw(
            redis_client,
            {"c": candle(2).to_json().replace('"low":69900', '"low":70500'), "s": "005930"},
        ),
        push_raw(redis_client, {"c": "{not json", "s": "005930"}),
        push_raw(redis_client, {"c": candle(3).to_json(), "s": "bad"}),
        push_raw(redis_client, {"s": "005930"}),
        push_raw(redis_client, {"c": candle(4, price=0).to_json(), "s": "005930"}),
    ]
    push(redis_client, good[1:])
    archiver = make_archiver()

    outcome = archiver.run_once()

    assert (outcome.read, outcome.archived, outcome.dead, outcome.acked) == (7, 2, 5, 7)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in good}
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0
    dead = redis_client.xrange(DEAD_STREAM)
    assert [fields[b"id"] for _, fields in dead] == bad_ids
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert "high 70200 < low 70500" in reasons[0]
    assert "candle JSON cannot be read" in reasons[1]
    assert "symbol 'bad' is not a KRX code" in reasons[2]
    assert "no 'c'" in reasons[3]
    assert "open 0 is not > 0" in reasons[4]
    assert dead[0][1][b"c"].startswith(b"{")  # the original candle is kept for a person

    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert handler.flush(timeout=30)
    logged = SystemLog.objects.filter(
        component="qb.archiver", level="WARNING", message__startswith="Invalid candle"
    ).order_by("id")
    assert [row.metadata["reason"] for row in logged] == reasons
    assert logged[0].metadata["stream_id"] == bad_ids[0].decode()


def test_many_consumers_share_the_group_without_double_work(redis_client, make_archiver):
    candles = [candle(i, symbol=f"{s:06d}") for s in range(8) for i in range(150)]
    push(redis_client, candles)
    archivers = [make_archiver(consumer=f"test-{n}", batch_size=40) for n in range(4)]
    threads = [threading.Thread(target=a.run, kwargs={"until_empty": True}) for a in archivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    stats = [a.stats() for a in archivers]
    # Every entry went to exactly one consumer: no candle was upserted twice.
    assert sum(s["archived"] for s in stats) == len(candles)
    assert sum(s["already_stored"] for s in stats) == 0
    assert MarketData.objects.count() == len(candles)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert redis_client.xlen(CANDLE_STREAM) == 0


def test_the_engine_archives_in_its_loop_and_stops(redis_client):
    push(redis_client, [candle(i) for i in range(20)])
    engine = ArchiverEngine(database_url=db_url(), block_ms=50)

    async def lifetime():
        await engine.setup()
        task = asyncio.create_task(engine.loop())
        for _ in range(400):
            if engine.stats()["archived"] == 20:
                break
            await asyncio.sleep(0.05)
        engine.stopping.set()
        await asyncio.wait_for(task, timeout=10)
        await engine.stop()

    asyncio.run(lifetime())

    assert engine.stats()["archived"] == 20
    assert MarketData.objects.count() == 20
    assert redis_client.xlen(CANDLE_STREAM) == 0


def test_unusual_candles_take_the_slow_path_with_the_same_rules(redis_client, make_archiver):
    fractional = Candle(
        symbol="069500",
        interval="1m",
        time=T0,
        open=Decimal("35120.55"),
        high=Decimal("35130"),
        low=Decimal("35100.5"),
        close=Decimal("35125"),
        volume=7,
    )
    off_grid = candle(1, price=70_001)  # not on the KRX tick grid (50 won at this price)
    push(redis_client, [fractional, off_grid])
    # Fields in another order than the collector's: still read.
    push_raw(redis_client, {"s": "005930", "c": candle(2).to_json()})

    outcome = make_archiver().run_once()
    assert (outcome.archived, outcome.dead) == (3, 0)
    assert stored()[("069500", "1m", T0)] == as_row(fractional)

    push(redis_client, [candle(3, price=70_001)])
    strict = make_archiver(check_tick=True, consumer="strict")
    outcome = strict.run_once()
    assert (outcome.archived, outcome.dead) == (0, 1)
    [(_, fields)] = redis_client.xrange(DEAD_STREAM)
    assert b"not on the KRX tick grid" in fields[b"reason"]


def test_a_row_the_database_refuses_is_isolated_and_the_rest_is_stored(make_archiver):
    # candle_problem catches every rule market_data checks; should one ever slip past it (a
    # rule added to the table only), the database's refusal must not stick the batch.
    from marketdata.archiver import _Entry

    archiver = make_archiver()
    good = candle(0)
    entries = [
        _Entry(
            b"1-0",
            [],
            key=("005930", "1m", good.time),
            line=b"005930,1m,%s,70000,70200,69900,70100,5\n" % good.time.isoformat().encode(),
        ),
        _Entry(
            b"2-0",
            [],
            key=("005930", "1m", T0 + dt.timedelta(minutes=1)),
            line=b"005930,1m,2024-03-04T00:01:00+00:00,70000,69000,69900,70100,5\n",
        ),
    ]

    result, refused = archiver._upsert(entries)

    assert result.inserted == 1
    assert [e.id for e in refused] == [b"2-0"]
    assert "refused by PostgreSQL" in refused[0].reason and "market_data_" in refused[0].reason
    assert list(stored()) == [("005930", "1m", good.time)]


def test_an_acknowledged_batch_leaves_the_stream_even_above_another_consumers_pending_batch(
    redis_client, make_archiver
):
    candles = [candle(i) for i in range(20)]
    ids = push(redis_client, candles)
    # Consumer A takes the first 10 and cannot write them (its database is down).
    stuck = make_archiver(
        consumer="a",
        batch_size=10,
        overlap=False,
        database_url=db_url(host="127.0.0.1", port=str(closed_port())),
    )
    assert stuck.run_once().acked == 0
    # Consumer B archives the next 10: they leave the stream, A's stay (not archived yet).
    # (A batch that is not full: nothing is read ahead, so the round ends acknowledged.)
    assert make_archiver(consumer="b", batch_size=20).run_once().archived == 10
    assert [entry_id for entry_id, _ in redis_client.xrange(CANDLE_STREAM)] == ids[:10]
    assert pending(redis_client) == 10

    stuck.database_url = db_url()
    assert stuck.run_once().archived == 10
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}


def test_a_drained_backlog_of_full_batches_is_all_acknowledged_when_run_returns(
    redis_client, make_archiver
):
    candles = [candle(i) for i in range(30)]
    push(redis_client, candles)
    archiver = make_archiver(batch_size=10)  # three full batches: each read ahead

    archiver.run(until_empty=True)

    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0
    assert (archiver.stats()["archived"], archiver.stats()["lag"]) == (30, 0)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}


# --- packed entries (the collector's format: up to STREAM_PACK_MAX candles an entry) ---------


def push_packed(redis_client, lines: list[str]) -> list[bytes]:
    pipe = redis_client.pipeline()
    for pack in buffer.stream_packs(lines):
        pipe.xadd(CANDLE_STREAM, {buffer.STREAM_PACK_FIELD: pack})
    return pipe.execute()


def lines_of(candles) -> list[str]:
    return [buffer.stream_line(c.to_json(), c.symbol) for c in candles]


def test_packed_entries_are_one_batch_stored_and_acknowledged(redis_client, make_archiver):
    candles = [candle(i) for i in range(1500)] + [candle(i, symbol="000660") for i in range(700)]
    ids = push_packed(redis_client, lines_of(candles))
    assert len(ids) == 3  # 1,000 + 1,000 + 200

    outcome = make_archiver(batch_size=20).run_once()

    assert (outcome.read, outcome.archived, outcome.acked, outcome.dead) == (2200, 2200, 2200, 0)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0


def test_a_round_reads_batch_size_entries_of_a_packed_backlog(redis_client, make_archiver):
    candles = [candle(i) for i in range(2500)]
    push_packed(redis_client, lines_of(candles))  # 3 entries
    archiver = make_archiver(batch_size=2, overlap=False)

    assert [archiver.run_once().archived for _ in range(3)] == [2000, 500, 0]
    assert MarketData.objects.count() == 2500


def test_packed_and_single_candle_entries_mix_in_one_batch(redis_client, make_archiver):
    first, second = [candle(i) for i in range(10)], [candle(i) for i in range(10, 12)]
    push_packed(redis_client, lines_of(first))
    push(redis_client, second)

    outcome = make_archiver(batch_size=20).run_once()

    assert (outcome.read, outcome.archived, outcome.dead) == (12, 12, 0)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in first + second}


def test_a_bad_line_of_a_packed_entry_is_set_aside_alone(redis_client, make_archiver):
    good = [candle(0), candle(1), candle(2)]
    broken = candle(3).to_json().replace('"low":69900', '"low":70500')  # low above high
    lines = [*lines_of(good[:2]), buffer.stream_line(broken, "005930"), "not a candle line"]
    [entry_id] = push_packed(redis_client, [*lines, *lines_of(good[2:])])

    outcome = make_archiver(batch_size=20).run_once()

    assert (outcome.read, outcome.archived, outcome.dead, outcome.acked) == (5, 3, 2, 5)
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in good}
    assert redis_client.xlen(CANDLE_STREAM) == 0
    assert pending(redis_client) == 0
    dead = redis_client.xrange(DEAD_STREAM)
    assert [fields[b"id"] for _, fields in dead] == [entry_id, entry_id]
    assert b"high 70200 < low 70500" in dead[0][1][b"reason"]
    assert dead[0][1][b"c"] == broken.encode()
    assert dead[1][1][b"line"] == b"not a candle line"
    assert b"not c,<candle JSON>,s,<symbol>" in dead[1][1][b"reason"]


def test_a_packed_entry_with_good_candles_is_acknowledged_only_after_their_commit(
    redis_client, make_archiver
):
    good = [candle(0), candle(1)]
    [entry_id] = push_packed(redis_client, [*lines_of(good[:1]), "junk", *lines_of(good[1:])])

    # PostgreSQL is away: the bad line is set aside (that needs no database), but the entry
    # still holds good candles, so it is NOT acknowledged.
    down = make_archiver(
        batch_size=20, database_url=db_url(host="127.0.0.1", port=str(closed_port()))
    )
    outcome = down.run_once()
    assert outcome.retry_after and outcome.archived == 0
    assert redis_client.xlen(DEAD_STREAM) == 1
    assert redis_client.xlen(CANDLE_STREAM) == 1 and pending(redis_client) == 1

    # Another archiver (the first one died) claims it: the good candles are stored, the bad
    # line set aside again (at least once), then the entry acknowledged.
    outcome = make_archiver(consumer="next", batch_size=20, claim_idle_ms=0).run_once()
    assert outcome.archived == 2
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in good}
    assert redis_client.xlen(CANDLE_STREAM) == 0 and pending(redis_client) == 0
    assert [f[b"id"] for _, f in redis_client.xrange(DEAD_STREAM)] == [entry_id, entry_id]


def test_killed_between_commit_and_ack_packed_entries_are_stored_exactly_once(redis_client):
    candles = [candle(i) for i in range(2500)]
    push_packed(redis_client, lines_of(candles))  # 3 entries: 1,000 + 1,000 + 500

    killed = run_child("--batch-size", "1", env={EXIT_AFTER_COMMIT_ENV: "1"})
    assert killed.returncode == 9, killed.stderr
    assert MarketData.objects.count() == 1000  # the first entry committed, not acknowledged
    assert redis_client.xlen(CANDLE_STREAM) == 3

    restarted = run_child("--batch-size", "1", "--claim-idle-ms", "0", "--until-empty")
    assert restarted.returncode == 0, restarted.stderr
    assert stored() == {(c.symbol, c.interval, c.time): as_row(c) for c in candles}
    assert MarketData.objects.count() == 2500
    assert redis_client.xlen(CANDLE_STREAM) == 0 and pending(redis_client) == 0
