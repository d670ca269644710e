"""The Redis buffer of market data: writer (one round trip per batch) and readers.

Writes. One batch of ticks becomes one EVALSHA of the Lua script below (one round trip; the
script is loaded with EVAL the first time, or again after a SCRIPT FLUSH). Within a batch every
touched key is written once with its latest state (the aggregator coalesces):
- HSET market:{symbol} with the quote fields (aggregation.QUOTE_FIELDS);
- per candles:{symbol}:{interval}: LSET 0 of the head candle when the head is the open (or just
  closed) candle, LPUSH of the candles opened since, then LTRIM to MAX_CANDLES_PER_SYMBOL;
- XADD of the batch's closed candles to CANDLE_STREAM, in the same script, so a candle is on the
  stream if and only if its list holds its final state: ONE entry per STREAM_PACK_MAX candles,
  field "b" = lines "c,<candle JSON>,s,<symbol>" joined by newlines (see STREAM_PACK_FIELD).
The stream is NOT trimmed here (no MAXLEN): a trimmed entry may not be archived yet. The archiver
XDELs entries after it has acknowledged them; trimming is its job.

A script rather than a pipeline: without hiredis, redis-py parses each pipeline reply in Python
(~2-4 us each, six replies per symbol), which alone would cap the collector far below its
target; the script returns one integer. The command is packed by hand (RESP) for the same
reason: redis-py's generic packer costs ~1 us per argument.

Memory. 2,500 symbols x 200 one-minute candles of the contract JSON (~115 bytes each) take about
64 MB as plain listpacks, over the 50 MB budget. With list-compress-depth 1 (inner quicklist
nodes LZF-compressed, head and tail left plain so LSET 0 / LPUSH / LTRIM stay cheap) and
list-max-listpack-size -1 (4 KB nodes, so more of each list is inner) it is ~43 bytes/candle:
~22 MB. The JSON contract is unchanged. Redis config needed: `list-compress-depth 1`,
`list-max-listpack-size -1` (bench/redis_memory.py measures it).

Readers: latest_quote / recent_candles (sync) and alatest_quote / arecent_candles (async).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

from django.conf import settings
from redis.exceptions import NoScriptError, ResponseError

from marketdata.aggregation import QUOTE_FIELDS, DayQuote, ListWrite
from marketdata.keys import CANDLE_STREAM, candles_key, quote_key
from marketdata.types import Candle

# ARGV: cap, number of quotes, number of lists, number of stream entries, then the records.
# KEYS: the quote keys, the list keys, then the stream.
_HSET_ARGS = ", ".join(f"'{name}', ARGV[a + {i}]" for i, name in enumerate(QUOTE_FIELDS))
SCRIPT = f"""
local cap = tonumber(ARGV[1])
local nq, nl, ns = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
for i = 1, nq do
  redis.call('HSET', KEYS[i], {_HSET_ARGS})
  a = a + {len(QUOTE_FIELDS)}
end
for i = 1, nl do
  local key = KEYS[nq + i]
  local head, npush = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  if head ~= '' then
    -- The list may have gone (FLUSHDB, an operator): then the candle starts it again.
    local ok = redis.pcall('LSET', key, 0, head)
    if type(ok) == 'table' and ok.err then redis.call('LPUSH', key, head) end
  end
  if npush > 0 then
    redis.call('LPUSH', key, unpack(ARGV, a, a + npush - 1))
    a = a + npush
    redis.call('LTRIM', key, 0, cap - 1)
  end
end
local stream = KEYS[nq + nl + 1]
for i = 1, ns do
  redis.call('XADD', stream, '*', 'b', ARGV[a])
  a = a + 1
end
return a - 5
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


# Closed candles travel to the archiver packed: one stream entry holds up to STREAM_PACK_MAX
# candles in its field STREAM_PACK_FIELD, one line "c,<candle JSON>,s,<symbol>" each (the JSON
# holds no newline). An entry per candle cost Redis (its consumer group's pending list) and the
# archiver (a reply object per field) more than the candle itself. Entries of one candle
# {"c": JSON, "s": symbol}, as written before, are still read (unpack_stream_entry, archiver).
STREAM_PACK_FIELD = "b"
STREAM_PACK_MAX = 1000


def stream_line(candle_json: str, symbol: str) -> str:
    return f"c,{candle_json},s,{symbol}"


def stream_packs(lines: list[str]) -> list[str]:
    """The values of the entries that carry `lines` (STREAM_PACK_MAX a value)."""
    return [
        "\n".join(lines[start : start + STREAM_PACK_MAX])
        for start in range(0, len(lines), STREAM_PACK_MAX)
    ]


def unpack_stream_entry(fields) -> list[tuple[bytes | None, bytes | None, bytes]]:
    """(symbol, candle JSON, the line) of each candle of a stream entry ({field: value} or the
    flat list Redis sends), packed or not; symbol and JSON are None when a line lacks them."""
    if isinstance(fields, (list, tuple)):
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    packed = fields.get(STREAM_PACK_FIELD.encode())
    if packed is None:
        symbol, candle = fields.get(b"s"), fields.get(b"c")
        return [(symbol, candle, b"c,%s,s,%s" % (candle or b"", symbol or b""))]
    found = []
    for line in packed.split(b"\n"):
        head, sep, symbol = line.rpartition(b",s,")
        if sep and head.startswith(b"c,"):
            found.append((symbol, head[2:], line))
        else:
            found.append((None, None, line))
    return found


def max_candles() -> int:
    return int(getattr(settings, "MAX_CANDLES_PER_SYMBOL", 200))


class WriteBatch:
    """One round trip's worth of writes, already encoded (RESP) for EVALSHA: build() writes
    each argument as a RESP bulk string as it goes, so sending is one join."""

    __slots__ = (
        "body",
        "list_writes",
        "nargs",
        "nkeys",
        "quote_fields",
        "stream_entries",
    )

    def __init__(self, body: list[str], nkeys: int, nargs: int, stream_entries: int, lists: int):
        # symbol -> the hash fields written (computed once; the quote events reuse them)
        self.quote_fields: dict[str, dict[str, str]] = {}
        self.body = body  # RESP bulk strings: the keys, then the arguments
        self.nkeys = nkeys
        self.nargs = nargs  # bulk strings in body
        self.stream_entries = stream_entries
        self.list_writes = lists

    @property
    def empty(self) -> bool:
        return not self.nkeys

    def packed(self, command: str, first: str) -> bytes:
        nkeys = str(self.nkeys)
        head = (
            f"*{self.nargs + 3}\r\n${len(command)}\r\n{command}\r\n${len(first)}\r\n{first}\r\n"
            f"${len(nkeys)}\r\n{nkeys}\r\n"
        )
        return (head + "".join(self.body)).encode()


def _bulk(text: str) -> str:
    """A RESP bulk string (length in bytes: a symbol may be non-ASCII)."""
    size = len(text) if text.isascii() else len(text.encode())
    return f"${size}\r\n{text}\r\n"


_LIST_KEYS: dict[tuple[str, str], str] = {}  # (symbol, interval) -> RESP of the list key
_QUOTE_KEYS: dict[str, str] = {}  # symbol -> RESP of the hash key


def _cached(cache: dict, key, text: str) -> str:
    if len(cache) > 100_000:
        cache.clear()
    found = cache[key] = _bulk(text)
    return found


def build(
    list_writes: list[ListWrite], quotes: dict[str, DayQuote], *, cap: int | None = None
) -> WriteBatch:
    """Encode the coalesced writes of one batch (marks the open bars as written)."""
    cap = max_candles() if cap is None else cap
    keys: list[str] = []
    quote_args: list[str] = []
    quote_fields: dict[str, dict[str, str]] = {}
    quote_keys = _QUOTE_KEYS
    for symbol, quote in quotes.items():
        key = quote_keys.get(symbol)
        if key is None:
            key = _cached(quote_keys, symbol, quote_key(symbol))
        keys.append(key)
        fields = quote_fields[symbol] = quote.fields()
        # The field values are ASCII (digits, sign, point, ISO time): length = bytes.
        quote_args.append("".join([f"${len(v)}\r\n{v}\r\n" for v in fields.values()]))
    list_args: list[str] = []
    stream_lines: list[str] = []
    nlists = npushes = 0
    list_keys = _LIST_KEYS
    for symbol, interval, _, closed, bar in list_writes:
        head = ""
        pushes: list[str] = []
        for done in closed:
            raw = done.json(interval)  # ASCII JSON
            text = f"${len(raw)}\r\n{raw}\r\n"
            if done.written and not pushes and not head:
                head = text
            else:
                pushes.append(text)
            stream_lines.append(stream_line(raw, symbol))
        if bar is not None:
            text = bar.json(interval)
            text = f"${len(text)}\r\n{text}\r\n"
            if bar.written and not pushes and not head:
                head = text
            else:
                pushes.append(text)
            bar.written = True
        if not head and not pushes:
            continue
        key = list_keys.get((symbol, interval))
        if key is None:
            key = _cached(list_keys, (symbol, interval), candles_key(symbol, interval))
        keys.append(key)
        list_args.append(head or "$0\r\n\r\n")
        if pushes:
            list_args.append(_bulk(str(len(pushes))))
            list_args.extend(pushes)  # oldest first: LPUSH a b c leaves c at the head
            npushes += len(pushes)
        else:
            list_args.append("$1\r\n0\r\n")
        nlists += 1
    if not keys and not stream_lines:
        return WriteBatch([], 0, 0, 0, 0)
    keys.append(_bulk(CANDLE_STREAM))
    stream_args = [_bulk(pack) for pack in stream_packs(stream_lines)]
    npacks = len(stream_args)
    counts = [_bulk(str(cap)), _bulk(str(len(quotes))), _bulk(str(nlists)), _bulk(str(npacks))]
    nargs = len(keys) + 4 + len(QUOTE_FIELDS) * len(quotes) + 2 * nlists + npushes + npacks
    batch = WriteBatch(
        [*keys, *counts, *quote_args, *list_args, *stream_args],
        len(keys),
        nargs,
        len(stream_lines),
        nlists,
    )
    batch.quote_fields = quote_fields
    return batch


def write(client, batch: WriteBatch) -> int:
    """Send one batch to Redis: one EVALSHA round trip (plus EVAL once if the script is not
    loaded). Returns the script's count of arguments consumed."""
    if batch.empty:
        return 0
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        try:
            connection.send_packed_command([batch.packed("EVALSHA", SCRIPT_SHA)])
            return connection.read_response()
        except NoScriptError:
            connection.send_packed_command([batch.packed("EVAL", SCRIPT)])
            return connection.read_response()
    except ResponseError:
        raise
    except BaseException:
        connection.disconnect()  # a half-read reply must not reach the next user
        raise
    finally:
        pool.release(connection)


async def awrite(client, batch: WriteBatch) -> int:
    """write() for redis.asyncio clients."""
    if batch.empty:
        return 0
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        try:
            await connection.send_packed_command([batch.packed("EVALSHA", SCRIPT_SHA)])
            return await connection.read_response()
        except NoScriptError:
            await connection.send_packed_command([batch.packed("EVAL", SCRIPT)])
            return await connection.read_response()
    except ResponseError:
        raise
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


# --- readers ---------------------------------------------------------------------------------
_PRICE_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "prev_close",
    "change",
    "upper_limit",
    "lower_limit",
)


def parse_quote(raw: dict) -> dict | None:
    """HGETALL market:{symbol} -> typed quote (Decimal prices, int volume, aware timestamp);
    None when there is no quote. Empty fields (unknown yet) are None."""
    if not raw:
        return None
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    quote: dict = {}
    for name, value in text.items():
        if value == "":
            quote[name] = None
        elif name == "timestamp":
            quote[name] = dt.datetime.fromisoformat(value)
        elif name == "volume":
            quote[name] = int(value)
        elif name in _PRICE_FIELDS or name == "change_rate":
            quote[name] = Decimal(value)
        else:
            quote[name] = value
    return quote


def latest_quote(client, symbol: str) -> dict | None:
    return parse_quote(client.hgetall(quote_key(symbol)))


async def alatest_quote(client, symbol: str) -> dict | None:
    return parse_quote(await client.hgetall(quote_key(symbol)))


def recent_candles(client, symbol: str, interval: str, n: int) -> list[Candle]:
    """The newest `n` candles, newest first (the head may be the open candle)."""
    if n <= 0:
        return []
    return [
        Candle.from_json(symbol, text)
        for text in client.lrange(candles_key(symbol, interval), 0, n - 1)
    ]


async def arecent_candles(client, symbol: str, interval: str, n: int) -> list[Candle]:
    if n <= 0:
        return []
    rows = await client.lrange(candles_key(symbol, interval), 0, n - 1)
    return [Candle.from_json(symbol, text) for text in rows]
