"""The archiver: closed candles from the Redis Stream CANDLE_STREAM into market_data.

At least once, and exactly once in effect (DESIGN.md, "Data that must not be lost"):
entries are read with the consumer group ARCHIVER_GROUP, upserted in one PostgreSQL
transaction per batch (marketdata.copy, ON CONFLICT DO NOTHING: a re-sent closed candle is
the same candle, and history corrected by the backfill is never overwritten by a replay),
and only after the commit acknowledged and deleted (XACK, then XTRIM MINID of the acknowledged
prefix and XDEL of any id above another consumer's pending batch, see `_ack`: the archiver owns
the stream's trimming, so the stream holds what is not archived yet).

One round of `Archiver.run_once()`:
1. entries this consumer was given and did not acknowledge (a batch that failed), then
   entries of other consumers idle longer than `claim_idle_ms` (a process that died:
   XAUTOCLAIM), then new entries (XREADGROUP > with COUNT and BLOCK);
2. a batch made only of usual candles as the collector writes them (the batch path: one regex
   pass and a few bytes.replace turn the whole reply into COPY csv text) is COPYed, committed
   and acknowledged; anything else, or a batch PostgreSQL refuses, goes entry by entry:
3. invalid candles (unparseable, or refused by `candle_problem`) go to DEAD_STREAM with the
   reason and a WARNING in system_logs, and are acknowledged: they never block a batch;
4. the valid ones are upserted and committed; then acknowledged.
Draining a backlog (a full batch of new entries), the next batch is read and prepared in a
worker thread while the current one is written, and the committed batch's XACK + XDEL runs
during the next write: Redis, this process and PostgreSQL work at the same time. Entries read
ahead sit in this consumer's pending list until their own batch is committed and acknowledged.
If PostgreSQL is down nothing is acknowledged: the round reports a retry delay (exponential,
capped), the outage is said once on stderr (system_logs lives in that database), and when the
database returns the entries are read again from this consumer's pending list and drained.
A process killed between the commit and the acknowledgement, or after reading ahead and before
a commit, leaves its entries pending: the next archiver claims them and the upsert finds the
committed ones stored (no duplicate, no gap).

The work is sync (redis-py and psycopg, a connection of its own): ArchiverEngine runs each round
in a thread, so the other engines' event loop never waits on PostgreSQL.

Entries: the collector packs the candles it closes in one write into one entry (field "b",
up to marketdata.buffer.STREAM_PACK_MAX lines "c,<candle JSON>,s,<symbol>"); entries of one
candle (fields "c" and "s", as written before) are read too. An entry is acknowledged once
every candle in it is stored or set aside; a bad line of a packed entry is set aside alone.

Settings (read with getattr, defaults here): ARCHIVER_BATCH_SIZE (20 entries at most a round:
up to 20,000 candles),
ARCHIVER_BLOCK_MS (1000, how long a round waits for new entries), ARCHIVER_CLAIM_IDLE_MS
(60000, idle time after which another consumer's pending entry is taken over),
ARCHIVER_MAX_BACKOFF_SECONDS (30), ARCHIVER_DEAD_MAXLEN (100000, entries kept in DEAD_STREAM),
ARCHIVER_CHECK_TICK (False, refuse prices off the KRX tick grid; True also turns the batch
path off), ARCHIVER_OVERLAP (True, read ahead and acknowledge while writing; False: one step
after the other), ARCHIVER_DATABASE_URL (unset: Django's database).

Fault injection for the crash test: with the environment variable
QB_ARCHIVER_EXIT_AFTER_COMMIT=1 the process calls os._exit(9) right after the first commit,
before acknowledging (once a batch being read ahead is read); with
QB_ARCHIVER_EXIT_AFTER_PREFETCH=1, once the next batch is read ahead and before the current
one is written (marketdata/tests/test_archiver.py). Nothing else reads them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter

import psycopg
import redis
from django.conf import settings

from marketdata.buffer import STREAM_PACK_FIELD, unpack_stream_entry
from marketdata.copy import (
    COLUMNS,
    FUTURE_SLACK,
    UpsertResult,
    candle_problem,
    candles_copy_upsert_lines,
    candles_copy_upsert_text,
    csv_line,
)
from marketdata.keys import ARCHIVER_GROUP, CANDLE_STREAM
from marketdata.models import Interval
from marketdata.types import Candle
from qbsite.db import connect
from qbsite.fields import SYMBOL_REGEX

# Invalid candles, with the reason: the original fields plus "reason", "id" (the entry id in
# CANDLE_STREAM) and "at". Read by people (redis-cli XRANGE), capped at ARCHIVER_DEAD_MAXLEN.
DEAD_STREAM = "stream:candles:dead"

EXIT_AFTER_COMMIT_ENV = "QB_ARCHIVER_EXIT_AFTER_COMMIT"
EXIT_AFTER_PREFETCH_ENV = "QB_ARCHIVER_EXIT_AFTER_PREFETCH"

log = logging.getLogger("qb.archiver")

_SYMBOL_RE = re.compile(SYMBOL_REGEX)


_INTERVAL_BYTES = {value.encode(): value for value in Interval.values}
# Candle.to_json's text with whole-number prices (marketdata/types.py): the fast path.
_USUAL_CANDLE = re.compile(
    rb'\{"timestamp":"([0-9T:.+\-Z]{16,32})","open":(\d{1,12}),"high":(\d{1,12}),'
    rb'"low":(\d{1,12}),"close":(\d{1,12}),"volume":(\d{1,18}),"interval":"(\w{1,3})"\}'
)


# The batch path: a whole batch of entries exactly as the collector writes them (fields c =
# JSON in Candle.to_json's key order with whole-won prices, then s = symbol) is joined as
# "c,<json>,s,<symbol>" lines, checked by one regex pass and turned into COPY csv text by a
# few bytes.replace, with no Python work per entry. The order of the values in those lines
# is the COPY's column order.
_BATCH_COLUMNS = ("time", "open", "high", "low", "close", "volume", "interval", "symbol")
_WON = rb"[1-9]\d{0,11}"  # > 0 and fits numeric(14, 2)
_BATCH_LINE = re.compile(
    rb'^c,\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ","open":'
    + _WON
    + rb',"high":'
    + _WON
    + rb',"low":'
    + _WON
    + rb',"close":'
    + _WON
    + rb',"volume":\d{1,18},"interval":"(?:'
    + b"|".join(re.escape(v.encode()) for v in sorted(Interval.values, key=len, reverse=True))
    + rb')"\},s,'
    + SYMBOL_REGEX.removeprefix("^").removesuffix("$").encode()
    + rb"$",
    re.MULTILINE,
)
_BATCH_STAMPS = re.compile(rb'"timestamp":"([^"]*)"')
_JSON_TO_CSV = (
    (b'c,{"timestamp":"', b""),
    (b'","open":', b","),
    (b',"high":', b","),
    (b',"low":', b","),
    (b',"close":', b","),
    (b',"volume":', b","),
    (b',"interval":"', b","),
    (b'"},s,', b","),
)
_STREAM_ARG = b"$%d\r\n%s\r\n" % (len(CANDLE_STREAM), CANDLE_STREAM.encode())
_GROUP_ARG = b"$%d\r\n%s\r\n" % (len(ARCHIVER_GROUP), ARCHIVER_GROUP.encode())
_ENTRY_ID = itemgetter(0)
_ENTRY_FIELDS = itemgetter(1)
_PACK_FIELD = STREAM_PACK_FIELD.encode()


def _entry_lines(flat: list) -> bytes | None:
    """An entry's candles as "c,<json>,s,<symbol>" lines: a packed entry's value as it is, an
    entry of one candle joined (its fields exactly c and s, in that order, so that a value
    holding a comma cannot pass for a field boundary); None for anything else."""
    if len(flat) == 2 and flat[0] == _PACK_FIELD:
        return flat[1]
    if len(flat) == 4 and flat[0] == b"c" and flat[2] == b"s":
        return b",".join(flat)
    return None


def _bulk_args(values: list[bytes]) -> bytes:
    """`values` as RESP bulk strings, without a Python loop per value."""
    return b"".join(map(b"$%d\r\n%s\r\n".__mod__, zip(map(len, values), values, strict=True)))


def _stream_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _pairs(flat: list) -> dict:
    """[field, value, field, value, ...] -> {field: value}."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _symbol_ok(raw: bytes, seen: dict) -> str | None:
    symbol = raw.decode(errors="replace")
    if not _SYMBOL_RE.match(symbol):
        return None
    if len(seen) > 50_000:
        seen.clear()
    seen[raw] = symbol
    return symbol


def _parse_time(stamp: bytes, cache: dict) -> tuple[datetime, bytes] | None:
    """(aware time, its ISO text for COPY), cached by the text; None if not an aware time."""
    try:
        moment = datetime.fromisoformat(stamp.decode())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    if len(cache) > 10_000:
        cache.clear()
    cache[stamp] = parsed = (moment, moment.isoformat().encode())
    return parsed


def _expand(raw: list) -> list[_Entry]:
    """One _Entry per candle: an entry of one candle as it is, a packed entry line by line
    (the same id; a line that is not "c,<json>,s,<symbol>" becomes an entry with only that line,
    which _parse sets aside)."""
    entries = []
    for entry_id, fields in raw:
        if fields and len(fields) == 2 and fields[0] == _PACK_FIELD:
            for symbol, candle, line in unpack_stream_entry(fields):
                if candle is None:
                    entries.append(_Entry(entry_id, [b"line", line]))
                else:
                    entries.append(_Entry(entry_id, [b"c", candle, b"s", symbol]))
        else:
            entries.append(_Entry(entry_id, fields or None))
    return entries


def consumer_name() -> str:
    """host-pid: unique per process, so a restarted process never inherits a dead one's entries
    silently (it claims them once they are idle)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_group(client: redis.Redis) -> None:
    """Create the stream and its consumer group if missing (from id 0: nothing is skipped)."""
    try:
        client.xgroup_create(CANDLE_STREAM, ARCHIVER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass
class RoundOutcome:
    read: int = 0
    archived: int = 0  # rows inserted
    already_stored: int = 0  # entries whose candle was in market_data already (re-deliveries)
    dead: int = 0
    acked: int = 0
    retry_after: float | None = None  # seconds to wait before the next round (an outage)
    error: str | None = None


@dataclass
class _Batch:
    raw: list  # [[id, [field, value, ...] or None], ...] as Redis sends them
    source: str  # "pending" (ours, re-read), "claimed" (a dead consumer's), "new"
    text: bytes | None = None  # the whole batch as COPY csv (_BATCH_COLUMNS): the batch path
    candles: int = 0  # candles in `text`


@dataclass
class _Entry:
    id: bytes
    fields: list | None  # [field, value, ...] as Redis sends them; None: entry deleted
    key: tuple | None = None  # (symbol, interval, time)
    line: bytes | None = None  # the candle as a COPY csv line
    reason: str | None = None


@dataclass
class _Totals:
    archived: int = 0
    already_stored: int = 0
    dead: int = 0
    rounds: int = 0
    pending: int = 0
    lag: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    down: set = field(default_factory=set)


class Archiver:
    def __init__(
        self,
        *,
        redis_client: redis.Redis | None = None,
        database_url: str | None = None,
        consumer: str | None = None,
        batch_size: int | None = None,
        block_ms: int | None = None,
        claim_idle_ms: int | None = None,
        max_backoff: float | None = None,
        check_tick: bool | None = None,
        overlap: bool | None = None,
    ) -> None:
        self.batch_size = batch_size or getattr(settings, "ARCHIVER_BATCH_SIZE", 20)
        self.block_ms = (
            block_ms if block_ms is not None else getattr(settings, "ARCHIVER_BLOCK_MS", 1000)
        )
        self.claim_idle_ms = (
            claim_idle_ms
            if claim_idle_ms is not None
            else getattr(settings, "ARCHIVER_CLAIM_IDLE_MS", 60_000)
        )
        self.max_backoff = (
            max_backoff
            if max_backoff is not None
            else getattr(settings, "ARCHIVER_MAX_BACKOFF_SECONDS", 30.0)
        )
        self.check_tick = (
            check_tick
            if check_tick is not None
            else getattr(settings, "ARCHIVER_CHECK_TICK", False)
        )
        self.overlap = (
            overlap if overlap is not None else getattr(settings, "ARCHIVER_OVERLAP", True)
        )
        self.dead_maxlen = getattr(settings, "ARCHIVER_DEAD_MAXLEN", 100_000)
        self.database_url = database_url or getattr(settings, "ARCHIVER_DATABASE_URL", None)
        self.consumer = consumer or consumer_name()
        self.redis = redis_client or redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=5,
            # Longer than a blocking read, so a quiet stream is not taken for a dead server.
            socket_timeout=self.block_ms / 1000 + 10,
        )
        self._conn: psycopg.Connection | None = None
        self._group_ready = False
        # Re-read our own pending entries first: at start (a previous round of this consumer
        # cannot exist, but the flag is cheap) and after any round that did not acknowledge.
        self._own_pending = True
        # Where the next read of our own pending entries starts: after the last one read, so
        # a batch in flight (written, not acknowledged yet) is never read twice.
        self._pending_from: bytes | str = "0"
        # The next batch of new entries, read while the current one is written (overlap).
        self._prefetch: Future | None = None
        # The previous batch's XACK + XDEL, while this one is written (overlap, backlog only).
        self._acking: Future | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._backoff = 0.0
        self._down_since: dict[str, float] = {}
        self._totals = _Totals()
        self._lock = threading.Lock()
        # Candles of one minute share their timestamp, and symbols repeat: parse each once.
        self._times: dict[bytes, tuple[datetime, bytes]] = {}
        self._symbols: dict[bytes, str] = {}

    # --- one round ----------------------------------------------------------------------

    def run_once(self) -> RoundOutcome:
        """Read, upsert, commit, acknowledge one batch. Never raises for an outage.

        With `overlap`, while a full batch of new entries is written (COPY, commit, XACK) the
        next one is already read and prepared in a reader thread: the read costs Redis and
        this process CPU, the write costs PostgreSQL, and they run at the same time. The
        entries read ahead are in this consumer's pending list, acknowledged only after the
        commit of their own batch: a crash loses nothing (they are re-delivered or claimed),
        and a failed round drops the batch read ahead and reads its pending list again. While
        a batch is read ahead, the committed batch's XACK + XDEL also runs in a worker, during
        the next batch's write (a failure shows in the next round, which reads the pending
        list again and finds those candles stored)."""
        outcome = RoundOutcome()
        try:
            if not self._group_ready:
                ensure_group(self.redis)
                self._group_ready = True
            batch = self._next_batch()
        except redis.RedisError as exc:
            return self._failed("redis", exc, outcome)
        self._recovered("redis")
        outcome.read = batch.candles or len(batch.raw)
        if not batch.raw:
            try:
                self._settle_ack()  # the last batch of a backlog: acknowledged when we return
            except redis.RedisError as exc:
                return self._failed("redis", exc, outcome)
            self._refresh_gauges()
            return outcome
        if (
            self.overlap
            and batch.source == "new"
            and len(batch.raw) >= self.batch_size
            # A claim of dead consumers' entries is due: the next round's read does it.
            and time.monotonic() < self._next_claim
        ):
            self._prefetch = self._workers().submit(self._read_new)
            if os.environ.get(EXIT_AFTER_PREFETCH_ENV) == "1":
                self._prefetch.result()
                os._exit(9)  # the overlap test's kill point: N+1 read, N not committed
        if batch.text is not None:
            try:
                conn = self._connection()
                with conn.transaction():
                    result = candles_copy_upsert_text(
                        conn,
                        batch.text,
                        batch.candles,
                        columns=_BATCH_COLUMNS,
                        on_conflict="nothing",
                    )
            except (psycopg.DataError, psycopg.IntegrityError):
                # A row breaks a rule only the database checks (an impossible date, high <
                # low): the entry by entry path below finds it and says why.
                result = None
            except (psycopg.Error, OSError) as exc:
                return self._failed("postgresql", exc, outcome)
            if result is not None:
                self._recovered("postgresql")
                if os.environ.get(EXIT_AFTER_COMMIT_ENV) == "1":
                    self._exit_after_commit()
                outcome.archived = result.inserted
                outcome.already_stored = result.unchanged + result.repeated
                ids = list(map(_ENTRY_ID, batch.raw))
                try:
                    self._settle_ack()
                    if self._prefetch is not None:
                        # Draining a backlog: the acknowledgement (Redis's work) runs while
                        # the next batch is written; the next round waits for it.
                        self._acking = self._workers().submit(self._ack, ids)
                    else:
                        self._ack(ids)
                except redis.RedisError as exc:
                    return self._failed("redis", exc, outcome)
                outcome.acked = batch.candles
                return self._done(outcome)
        return self._entry_by_entry(batch.raw, outcome)

    def _entry_by_entry(self, raw: list, outcome: RoundOutcome) -> RoundOutcome:
        """The batch checked and written entry by entry (anything the batch path refused)."""
        try:
            self._settle_ack()
        except redis.RedisError as exc:
            return self._failed("redis", exc, outcome)
        entries = _expand(raw)
        outcome.read = len(entries)
        latest = datetime.now(UTC) + FUTURE_SLACK
        for entry in entries:
            self._parse(entry, latest)
        dead = [e for e in entries if e.reason is not None]
        good = [e for e in entries if e.line is not None]
        gone = [e for e in entries if e.fields is None]  # deleted before it was acknowledged
        # A packed entry is acknowledged when all its candles are done: with good ones, after
        # their commit.
        waiting = {e.id for e in good}
        try:
            if dead or gone:
                # Needs no database: set aside even while PostgreSQL is down.
                done = [e.id for e in dead + gone if e.id not in waiting]
                self._dead_letter(dead, gone, ack=list(dict.fromkeys(done)))
                outcome.dead = len(dead)
                outcome.acked += len(dead) + len(gone)
        except redis.RedisError as exc:
            return self._failed("redis", exc, outcome)
        if good:
            try:
                result, refused = self._upsert(good)
            except (psycopg.Error, OSError) as exc:
                return self._failed("postgresql", exc, outcome)
            self._recovered("postgresql")
            if os.environ.get(EXIT_AFTER_COMMIT_ENV) == "1":
                self._exit_after_commit()
            if refused:
                # The database refused rows that passed candle_problem (a rule it lacks).
                try:
                    self._dead_letter(refused, [], ack=[])
                except redis.RedisError as exc:
                    return self._failed("redis", exc, outcome)
                outcome.dead += len(refused)
                outcome.acked += len(refused)
                good = [e for e in good if e.reason is None]
            outcome.archived = result.inserted
            outcome.already_stored = result.unchanged + result.repeated
            try:
                # The entries with a good candle (those with a refused one too: it is set
                # aside by now), once each.
                self._ack(list(dict.fromkeys(e.id for e in entries if e.id in waiting)))
            except redis.RedisError as exc:
                # Committed but not acknowledged: re-read next round, found stored, acknowledged.
                return self._failed("redis", exc, outcome)
            outcome.acked += len(good)
        return self._done(outcome)

    def _done(self, outcome: RoundOutcome) -> RoundOutcome:
        self._backoff = 0.0
        with self._lock:
            totals = self._totals
            totals.archived += outcome.archived
            totals.already_stored += outcome.already_stored
            totals.dead += outcome.dead
            totals.rounds += 1
        return outcome

    def _exit_after_commit(self) -> None:
        # The crash test's kill point: committed, not acknowledged. A batch being read ahead
        # is let finish first, so what the dead process leaves pending does not depend on
        # thread timing.
        if self._prefetch is not None:
            with contextlib.suppress(Exception):
                self._prefetch.result()
        os._exit(9)

    def _next_batch(self) -> _Batch:
        future, self._prefetch = self._prefetch, None
        if future is not None:
            return future.result()
        return self._fetch()

    def _settle_ack(self) -> None:
        """Wait for the previous round's acknowledgement; raises its Redis error."""
        future, self._acking = self._acking, None
        if future is not None:
            future.result()

    def _drop_prefetch(self) -> None:
        """Forget the batch read ahead (it stays in our pending list, read again from there),
        once it and any acknowledgement in flight are finished."""
        for future in (self._prefetch, self._acking):
            if future is not None:
                with contextlib.suppress(Exception):
                    future.result()
        self._prefetch = self._acking = None

    def _workers(self) -> ThreadPoolExecutor:
        # Two: one read ahead and one acknowledgement in flight at most.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qb-archiver")
        return self._pool

    def _fetch(self) -> _Batch:
        if self._own_pending:
            raw = self._read(self._pending_from, block=None)
            if raw:
                self._pending_from = raw[-1][0]
                return self._batch(raw, "pending")
            self._own_pending = False
            self._pending_from = "0"
        if time.monotonic() >= self._next_claim:
            cursor, claimed, *_ = self.redis.xautoclaim(
                CANDLE_STREAM,
                ARCHIVER_GROUP,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=self._claim_cursor,
                count=self.batch_size,
            )
            cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
            self._claim_cursor = cursor
            if cursor == "0-0":  # scanned the whole pending list: look again later
                self._next_claim = time.monotonic() + min(self.claim_idle_ms / 2000, 5.0)
            if claimed:
                raw = [
                    [entry_id, [x for pair in fields.items() for x in pair] or None]
                    for entry_id, fields in claimed
                ]
                return self._batch(raw, "claimed")
        return self._read_new()

    def _read_new(self) -> _Batch:
        # BLOCK 0 would wait forever: 0 here means "do not wait".
        return self._batch(self._read(">", block=self.block_ms or None), "new")

    def _batch(self, raw: list, source: str) -> _Batch:
        text, candles = self._batch_text(raw) if raw else (None, 0)
        return _Batch(raw, source, text, candles)

    def _batch_text(self, raw: list) -> tuple[bytes | None, int]:
        """(the batch as COPY csv text, its number of candles) if every candle is a usual
        candle as the collector writes it, else (None, 0): the entry by entry path. What passes
        here passes candle_problem, but for the rules PostgreSQL checks itself (a real calendar
        date, low <= open, close <= high): a batch it refuses is written again entry by entry,
        which names the row."""
        if self.check_tick:
            return None, 0
        try:
            parts = list(map(_entry_lines, map(_ENTRY_FIELDS, raw)))
        except TypeError:  # a deleted entry (no fields), or str values
            return None, 0
        if None in parts:
            return None, 0
        text = b"\n".join(parts)
        lines = text.count(b"\n") + 1
        # Every line matched once and no value holds a newline: each line is a usual candle.
        rest, matched = _BATCH_LINE.subn(b"", text)
        if matched != lines or rest != b"\n" * (lines - 1):
            return None, 0
        # Fixed-width UTC stamps: the text order is the time order.
        latest = (datetime.now(UTC) + FUTURE_SLACK).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
        if max(_BATCH_STAMPS.findall(text)) > latest:
            return None, 0
        for json_part, csv_part in _JSON_TO_CSV:
            text = text.replace(json_part, csv_part)
        return text + b"\n", lines

    def _read(self, start: str | bytes, *, block: int | None) -> list:
        command = ["XREADGROUP", "GROUP", ARCHIVER_GROUP, self.consumer]
        command += ["COUNT", self.batch_size]
        if block is not None:
            command += ["BLOCK", block]
        command += ["STREAMS", CANDLE_STREAM, start]
        try:
            answer = self._raw_command(command)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group was deleted: make it again
                self._group_ready = False
            raise
        if not answer:
            return []
        # RESP2 gives [[stream, entries]], RESP3 {stream: entries}.
        # [[id, [field, value, ...]], ...]; a deleted entry still pending has no fields (nil).
        return answer[0][1] if isinstance(answer, list) else next(iter(answer.values()))

    def _raw_command(self, command: list):
        """The reply as the C parser gives it (flat field lists), without redis-py's per-entry
        dicts: a third of the archiver's time per candle went there."""
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command(*command)
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _parse(self, entry: _Entry, latest: datetime) -> None:
        """Sets entry.key and entry.line (a COPY csv line), or entry.reason."""
        if entry.fields is None:
            return
        flat = entry.fields
        if len(flat) == 2 and flat[0] == b"line":  # _expand: a packed entry's bad line
            entry.reason = "a line of the packed entry is not c,<candle JSON>,s,<symbol>"
            return
        if len(flat) == 4 and flat[0] == b"c" and flat[2] == b"s":  # as the collector writes
            raw_candle, raw_symbol = flat[1], flat[3]
        else:
            fields = _pairs(flat)
            raw_symbol, raw_candle = fields.get(b"s"), fields.get(b"c")
        if raw_symbol is None or raw_candle is None:
            entry.reason = "entry has no 'c' (candle JSON) or no 's' (symbol) field"
            return
        if not self.check_tick:
            fast = self._fast(raw_symbol, raw_candle, latest)
            if fast is not None:
                entry.key, entry.line = fast
                return
        try:
            symbol = raw_symbol.decode()
            candle = Candle.from_json(symbol, raw_candle)
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            entry.reason = f"candle JSON cannot be read: {type(exc).__name__}: {exc}"
            return
        row = (
            candle.symbol,
            candle.interval,
            candle.time,
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
        )
        problem = candle_problem(row, check_tick=self.check_tick)
        if problem:
            entry.reason = problem
        else:
            entry.key = (row[0], row[1], row[2])
            entry.line = csv_line(row).encode()

    def _fast(self, raw_symbol: bytes, raw_candle: bytes, latest: datetime):
        """(key, COPY line) for the usual candle, or None for the slow path.

        The usual candle is Candle.to_json's exact text with whole-won prices (what the
        collector writes): one regex on the bytes and a few comparisons check it. Anything
        else returns None and goes through Candle.from_json and candle_problem, which also
        name what is wrong; whatever passes here passes candle_problem too.
        """
        found = _USUAL_CANDLE.fullmatch(raw_candle)
        if found is None:
            return None
        stamp, o, h, lo, c, v, interval_bytes = found.groups()
        interval = _INTERVAL_BYTES.get(interval_bytes)
        symbol = self._symbols.get(raw_symbol)
        if symbol is None:
            symbol = _symbol_ok(raw_symbol, self._symbols)
        if interval is None or symbol is None:
            return None
        low, high = int(lo), int(h)
        if not (0 < low <= int(o) <= high and low <= int(c) <= high):
            return None
        parsed = self._times.get(stamp) or _parse_time(stamp, self._times)
        if parsed is None or parsed[0] > latest:
            return None
        return (symbol, interval, parsed[0]), b"%s,%s,%s,%s,%s,%s,%s,%s\n" % (
            raw_symbol,
            interval_bytes,
            parsed[1],
            o,
            h,
            lo,
            c,
            v,
        )

    def _upsert(self, good: list[_Entry]) -> tuple[UpsertResult, list[_Entry]]:
        conn = self._connection()
        try:
            with conn.transaction():
                return self._write(conn, good), []
        except (psycopg.DataError, psycopg.IntegrityError):
            pass
        # One row of the batch breaks a rule the database checks and candle_problem does not:
        # find it row by row, so the others are stored and the batch is never stuck.
        result = UpsertResult()
        refused = []
        for entry in good:
            try:
                with conn.transaction():
                    result += self._write(conn, [entry])
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                entry.reason = f"refused by PostgreSQL: {str(exc).strip().splitlines()[0]}"
                entry.line = None
                refused.append(entry)
        return result, refused

    @staticmethod
    def _write(conn: psycopg.Connection, entries: list[_Entry]) -> UpsertResult:
        lines = {e.key: e.line for e in entries}
        result = candles_copy_upsert_lines(conn, lines, columns=COLUMNS, on_conflict="nothing")
        result.repeated += len(entries) - len(lines)
        return result

    def _dead_letter(self, dead: list[_Entry], gone: list[_Entry], *, ack: list[bytes]) -> None:
        """Set `dead` aside in DEAD_STREAM (with the reason) and acknowledge and delete the
        entries `ack` (those with nothing else to store; a packed entry with good candles is
        acknowledged after their commit)."""
        at = datetime.now(UTC).isoformat()
        with self.redis.pipeline(transaction=True) as pipe:
            for entry in dead:
                fields = _pairs(entry.fields or [])
                fields.update({b"reason": entry.reason, b"id": entry.id, b"at": at})
                pipe.xadd(DEAD_STREAM, fields, maxlen=self.dead_maxlen, approximate=True)
            if ack:
                pipe.xack(CANDLE_STREAM, ARCHIVER_GROUP, *ack)
                pipe.xdel(CANDLE_STREAM, *ack)
            pipe.execute()
        for entry in dead:
            fields = _pairs(entry.fields or [])
            log.warning(
                "Invalid candle set aside in %s: %s",
                DEAD_STREAM,
                entry.reason,
                extra={
                    "metadata": {
                        "stream_id": entry.id.decode(),
                        "symbol": _text(fields.get(b"s")),
                        "candle": _text(fields.get(b"c")),
                        "reason": entry.reason,
                    }
                },
            )

    def _ack(self, ids: list[bytes]) -> None:
        """XACK `ids`, then delete them from the stream, and the gauges.

        Deleting thousands of ids one by one (XDEL) cost Redis as much as reading them. Every
        entry below both the group's oldest pending entry and past our last id is delivered
        and acknowledged (XREADGROUP delivers in id order; a claim moves pending entries
        only), so XTRIM MINID removes that whole prefix at once, including entries a process
        acknowledged before dying; only ids at or above the oldest pending entry (another
        consumer's batch in flight below ours) are deleted one by one. A crash between the
        two steps leaves acknowledged entries in the stream: the next trim removes them. The
        commands are packed here: redis-py's per-argument packing cost more than Redis's work.
        """
        pending = self._raw_transaction(
            [
                b"*%d\r\n$4\r\nXACK\r\n%s%s" % (len(ids) + 3, _STREAM_ARG, _GROUP_ARG),
                _bulk_args(ids),
                b"*3\r\n$8\r\nXPENDING\r\n%s%s" % (_STREAM_ARG, _GROUP_ARG),
            ],
            2,
        )[1]
        last = _stream_id(ids[-1])
        cutoff = (last[0], last[1] + 1)
        if pending[0]:
            cutoff = min(cutoff, _stream_id(pending[1]))
        left = [i for i in ids if _stream_id(i) >= cutoff] if cutoff <= last else []
        commands = [b"*4\r\n$5\r\nXTRIM\r\n%s$5\r\nMINID\r\n" % _STREAM_ARG]
        commands.append(_bulk_args([b"%d-%d" % cutoff]))
        if left:
            commands.append(b"*%d\r\n$4\r\nXDEL\r\n%s" % (len(left) + 2, _STREAM_ARG))
            commands.append(_bulk_args(left))
        commands.append(b"*2\r\n$4\r\nXLEN\r\n%s" % _STREAM_ARG)
        replies = self._raw_transaction(commands, 3 if left else 2)
        self._set_gauges(replies[-1], {"pending": pending[0]})

    def _raw_transaction(self, commands: list[bytes], count: int) -> list:
        """MULTI, `count` packed commands, EXEC: the EXEC reply; raises a command's error."""
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(
                [b"".join([b"*1\r\n$5\r\nMULTI\r\n", *commands, b"*1\r\n$4\r\nEXEC\r\n"])]
            )
            for _ in range(count + 1):  # OK for MULTI, QUEUED for each command
                conn.read_response()
            replies = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        for reply in replies:
            if isinstance(reply, Exception):  # a command that failed inside EXEC
                raise reply
        return replies

    def _refresh_gauges(self) -> None:
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xlen(CANDLE_STREAM)
                pipe.xpending(CANDLE_STREAM, ARCHIVER_GROUP)
                length, pending = pipe.execute()
        except redis.RedisError:
            return
        self._set_gauges(length, pending)

    def _set_gauges(self, length: int, pending: dict) -> None:
        with self._lock:
            self._totals.lag = length
            self._totals.pending = pending.get("pending", 0) if isinstance(pending, dict) else 0

    # --- outages ------------------------------------------------------------------------

    def _failed(self, what: str, exc: BaseException, outcome: RoundOutcome) -> RoundOutcome:
        if what == "postgresql":
            self._disconnect()
        self._drop_prefetch()
        self._own_pending = True  # what we were given is still ours: read it again
        self._pending_from = "0"
        self._backoff = min(self.max_backoff, self._backoff * 2 or 0.5)
        message = f"{what}: {_describe(exc)}"
        with self._lock:
            self._totals.last_error = message
            self._totals.last_error_at = datetime.now(UTC).isoformat()
        if what not in self._down_since:
            self._down_since[what] = time.monotonic()
            # stderr, not logging: system_logs is in the database that may be the one down.
            _stderr(
                f"qb archiver: {what} unavailable ({_describe(exc)}); nothing acknowledged,"
                f" retrying with backoff up to {self.max_backoff:g}s."
            )
        outcome.retry_after = self._backoff
        outcome.error = message
        return outcome

    def _recovered(self, what: str) -> None:
        since = self._down_since.pop(what, None)
        if since is not None:
            seconds = time.monotonic() - since
            _stderr(f"qb archiver: {what} is back after {seconds:.1f}s; draining the backlog.")
            log.warning(
                "Archiver: %s was unavailable for %.1f s; the backlog is being archived.",
                what,
                seconds,
                extra={"metadata": {"outage_seconds": round(seconds, 1), "store": what}},
            )

    # --- connections, stats, loop ---------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database_url, application_name="qb-archiver")
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def stats(self) -> dict:
        with self._lock:
            t = self._totals
            return {
                "consumer": self.consumer,
                "archived": t.archived,
                "already_stored": t.already_stored,
                "dead": t.dead,
                "rounds": t.rounds,
                "pending": t.pending,
                "lag": t.lag,
                "down": sorted(self._down_since),
                "last_error": t.last_error,
                "last_error_at": t.last_error_at,
            }

    def run(self, stop: threading.Event | None = None, *, until_empty: bool = False) -> None:
        """Rounds until `stop` is set (or, with until_empty, until nothing is left to archive)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            outcome = self.run_once()
            if outcome.retry_after:
                stop.wait(outcome.retry_after)
            elif until_empty and outcome.read == 0 and self.stats()["pending"] == 0:
                return

    def close(self) -> None:
        # A batch read ahead and not written stays pending under this consumer: another
        # archiver claims it after claim_idle_ms, as after a crash.
        self._drop_prefetch()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._disconnect()
        self.redis.close()


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def main(argv: list[str] | None = None) -> None:
    """One archiver process without the engines runtime, after django.setup() (the crash test
    runs it in a child process: `python -c "import django; django.setup();
    from marketdata.archiver import main; main()" --until-empty`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="archiver")
    parser.add_argument("--database-url", help="Default: Django's database.")
    parser.add_argument("--redis-url", help="Default: settings.REDIS_URL.")
    parser.add_argument("--claim-idle-ms", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--until-empty", action="store_true", help="Stop when drained.")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url) if args.redis_url else None
    archiver = Archiver(
        redis_client=client,
        database_url=args.database_url,
        claim_idle_ms=args.claim_idle_ms,
        batch_size=args.batch_size,
        block_ms=200 if args.until_empty else None,
    )
    try:
        archiver.run(until_empty=args.until_empty)
    except KeyboardInterrupt:
        pass
    finally:
        print(json.dumps(archiver.stats()))
        archiver.close()
