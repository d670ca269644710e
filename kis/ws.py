"""The KIS WebSocket client: subscriptions, PINGPONG, AES keys, reconnects; parsed records out.

    client = KISWebSocket(url=config.ws_url, approval_key=store.approval_key)
    await client.subscribe("H0STCNT0", "005930")        # before or while running
    async for batch in client.batches():                 # connects, reconnects, until close()
        batch.tr_id, batch.records                       # [kis.frames.Trade] or [FillNotice]
    await client.close()

- Registrations: at most MAX_REGISTRATIONS (41) (tr_id, tr_key) pairs in all, as KIS allows per
  session; one more raises RegistrationLimitError. They are kept across reconnects: after a drop
  the client reconnects with exponential backoff and jitter (backoff_delay) and subscribes to
  every one again, with the approval key the provider gives then.
- Subscribe answers: the AES key / iv of an encrypted stream (fill notices) is kept per tr_id for
  the session. "ALREADY IN SUBSCRIBE" counts as subscribed. A refused registration ("MAX
  SUBSCRIBE OVER", an unknown tr_id...) is dropped, logged and kept in `rejected`. A refused
  approval key ends the session; `approval_key_refused(key)` (if given) is awaited so that the
  provider issues a new one, and the client reconnects. "ALREADY IN USE appkey" (another
  session holds the app key: nothing is served) ends the session too; it reconnects with backoff.
- PINGPONG: answered at once, with the same text (KIS's older sample) and a pong frame carrying
  it (the current one); KIS drops a session that does not answer.
- A malformed frame (kis.frames.FrameError, kis.crypto.DecryptError) is logged (WARNING on
  "qb.kis", so system_logs; at most `log_burst` per `log_interval` seconds, the rest counted)
  and skipped; the stream goes on.

The protocol itself is `KISProtocol`, with no I/O: `handle(text)` -> (batch or None, replies to
send). A test drives it with strings.

One session per process: KIS allows one WebSocket session per app key, and `batches()` has a
single reader. Parts of a process that all need KIS streams (the KIS feed, the orders engine's
fill-notice listener) each take a consumer of the process's shared session instead:

    feed = session_consumer("kis feed")                  # KISConfig.from_settings(); lazy
    await feed.subscribe("H0STCNT0", "005930")
    async for batch in feed.batches():                   # only this consumer's records
        ...
    await feed.close()                                   # the last one out closes the session

- The registry: one KISSession per (ws_url, app key) in the process, made on the first
  consumer's first subscribe() / batches() (on the running event loop; a consumer on another
  live loop is refused) and closed, with the resources it opened, when its last consumer
  closes. Connecting, reconnecting and subscribing everything again stay the KISWebSocket's.
- One reader task reads the KISWebSocket and hands each Batch to the consumers registered for
  it: H0STCNT0 records by symbol (tr_key), other streams (fill notices, tr_key the HTS id) whole
  to every consumer registered on their tr_id. Two consumers may hold the same registration;
  KIS gets it once and loses it with its last holder.
- Slow consumers: each consumer has a bounded queue (queue_size batches, 1000 by default). The
  reader never waits for a consumer: when a queue is full its OLDEST batch is dropped for the new
  one (the consumer catches up on fresh data; the other consumers see nothing of it); drops are
  counted (`dropped_batches`, `dropped_records`) and logged (WARNING on "qb.kis", at most once
  per log_interval seconds per consumer, with the count since the last line).
- The 41 registrations are counted across the consumers: one more raises RegistrationLimitError
  naming what every consumer holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis
import websockets

from kis import crypto
from kis.config import app_key_id
from kis.errors import KISError
from kis.frames import (
    FIELD_COUNTS,
    KST,
    MAX_REGISTRATIONS,
    TR_TRADES,
    Control,
    FillNotice,
    Trade,
    parse_fill_notices,
    parse_message,
    parse_trades,
)

logger = logging.getLogger("qb.kis")

SUBSCRIBE, UNSUBSCRIBE = "1", "2"
CUSTTYPE = "P"  # a private (not corporate) customer
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A session that lasted this long counts as stable: a drop after it starts the backoff over.
STABLE_SESSION_SECONDS = 30.0
OPEN_TIMEOUT_SECONDS = 10.0


class KISWebSocketError(KISError):
    code = "kis_ws_error"


class RegistrationLimitError(KISWebSocketError):
    code = "kis_ws_registration_limit"


class ApprovalRefused(KISWebSocketError):
    code = "kis_ws_approval_refused"


class SessionInUse(KISWebSocketError):
    """KIS: "ALREADY IN USE appkey": another session holds the app key, this one is served
    nothing; it ends and the client reconnects with backoff."""

    code = "kis_ws_session_in_use"


@dataclass(frozen=True, slots=True)
class Batch:
    """The records of one data frame: kis.frames.Trade (H0STCNT0) or FillNotice (H0STCNI0/9)."""

    tr_id: str
    records: list[Trade] | list[FillNotice]


def subscribe_message(approval_key: str, tr_id: str, tr_key: str, *, subscribe: bool = True) -> str:
    return json.dumps(
        {
            "header": {
                "approval_key": approval_key,
                "custtype": CUSTTYPE,
                "tr_type": SUBSCRIBE if subscribe else UNSUBSCRIBE,
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
        }
    )


def backoff_delay(
    attempt: int,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_MAX_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """The wait before reconnect `attempt` (0, 1, ...): base * 2**attempt up to cap, of which a
    random half (jitter: many clients dropped at once do not come back in step)."""
    ceiling = min(cap, base * 2 ** min(attempt, 32))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


def kst_today() -> dt.date:
    return dt.datetime.now(KST).date()


class KISProtocol:
    """One client's protocol state, no I/O: its registrations, the AES keys, what came in."""

    def __init__(
        self,
        *,
        max_registrations: int = MAX_REGISTRATIONS,
        today: Callable[[], dt.date] = kst_today,
    ) -> None:
        self.max_registrations = max_registrations
        self.today = today
        # (tr_id, tr_key) -> "pending" (sent, no answer yet on this session) or "active"
        self.registrations: dict[tuple[str, str], str] = {}
        self.keys: dict[str, tuple[str, str]] = {}  # tr_id -> (AES key, iv)
        self.rejected: list[tuple[str, str, str]] = []  # (tr_id, tr_key, KIS's msg1)
        self.pings = 0

    def add(self, tr_id: str, tr_key: str) -> bool:
        """Register; False when already registered. RegistrationLimitError beyond the limit."""
        if tr_id not in FIELD_COUNTS:
            raise KISWebSocketError(
                f"Cannot subscribe to {tr_id!r}: the client reads {', '.join(FIELD_COUNTS)}."
            )
        if not tr_key or not tr_key.strip():
            raise KISWebSocketError(f"Cannot subscribe to {tr_id}: tr_key is empty.")
        registration = (tr_id, tr_key)
        if registration in self.registrations:
            return False
        if len(self.registrations) >= self.max_registrations:
            raise RegistrationLimitError(
                f"Cannot subscribe to {tr_id} {tr_key}: KIS allows at most "
                f"{self.max_registrations} registrations per session and all are in use."
            )
        self.registrations[registration] = "pending"
        return True

    def remove(self, tr_id: str, tr_key: str) -> None:
        if self.registrations.pop((tr_id, tr_key), None) is None:
            raise KISWebSocketError(f"Cannot unsubscribe from {tr_id} {tr_key}: not subscribed.")

    def session_started(self) -> list[tuple[str, str]]:
        """A new connection: every registration to send again; the old session's keys are void."""
        self.keys.clear()
        for registration in self.registrations:
            self.registrations[registration] = "pending"
        return list(self.registrations)

    def handle(self, text: str | bytes) -> tuple[Batch | None, list[str]]:
        """One message in -> (its records, if a data frame; the texts to send back).
        Raises FrameError / DecryptError for a malformed one, ApprovalRefused when KIS refuses
        the approval key, SessionInUse when another session holds the app key."""
        message = parse_message(text)
        if isinstance(message, Control):
            return None, self._control(message, text)
        payload = message.payload
        if message.encrypted:
            key_iv = self.keys.get(message.tr_id)
            if key_iv is None:
                raise crypto.DecryptError(
                    f"{message.tr_id} frame is encrypted but no subscribe answer gave its key."
                )
            payload = crypto.decrypt(payload, key=key_iv[0], iv=key_iv[1])
        if message.tr_id == TR_TRADES:
            records = parse_trades(payload, message.count)
        else:
            records = parse_fill_notices(message.tr_id, payload, message.count, day=self.today())
        return Batch(message.tr_id, records), []

    def _control(self, message: Control, text) -> list[str]:
        registration = (message.tr_id, message.tr_key)
        if message.kind == "pingpong":
            self.pings += 1
            return [text if isinstance(text, str) else text.decode("utf-8")]
        if message.kind in ("subscribed", "already_subscribed"):
            if message.key and message.iv:
                self.keys[message.tr_id] = (message.key, message.iv)
            if registration in self.registrations:
                self.registrations[registration] = "active"
            return []
        if message.kind == "unsubscribed":
            return []
        if message.kind == "in_use":
            raise SessionInUse(
                f"KIS refused the WebSocket session: {message.msg_cd} {message.msg1} (another"
                " session holds the app key)",
                msg_cd=message.msg_cd,
                msg1=message.msg1,
            )
        if "APPROVAL" in message.msg1.upper():
            raise ApprovalRefused(
                f"KIS refused the WebSocket approval key: {message.msg_cd} {message.msg1}",
                msg_cd=message.msg_cd,
                msg1=message.msg1,
                tr_id=message.tr_id,
            )
        # A refused registration: retrying it on every reconnect would be refused again.
        if self.registrations.pop(registration, None) is not None:
            self.rejected.append((message.tr_id, message.tr_key, message.msg1))
        logger.warning(
            "KIS refused %s %s: %s %s",
            message.tr_id,
            message.tr_key,
            message.msg_cd,
            message.msg1,
            extra={
                "metadata": {
                    "tr_id": message.tr_id,
                    "tr_key": message.tr_key,
                    "msg_cd": message.msg_cd,
                    "msg1": message.msg1,
                }
            },
        )
        return []


class KISWebSocket:
    """The client (see the module doc). `approval_key`: an async callable giving the key
    (kis.token.TokenStore.approval_key); `approval_key_refused(key)`: awaited when KIS
    refuses it."""

    def __init__(
        self,
        *,
        url: str,
        approval_key: Callable[[], Awaitable[str]],
        approval_key_refused: Callable[[str], Awaitable[None]] | None = None,
        max_registrations: int = MAX_REGISTRATIONS,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        open_timeout: float = OPEN_TIMEOUT_SECONDS,
        ping_interval: float | None = 20.0,
        rng: random.Random | None = None,
        today: Callable[[], dt.date] = kst_today,
        log_interval: float = 10.0,
        log_burst: int = 20,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise KISWebSocketError(f"KIS WebSocket URL {url!r} is not ws:// or wss://.")
        self.url = url
        self._approval_key = approval_key
        self._approval_key_refused = approval_key_refused
        self.protocol = KISProtocol(max_registrations=max_registrations, today=today)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # The attempt number of each reconnect's backoff (the latest 100): 0, 1, 2... while
        # sessions keep failing or drop soon after they start.
        self.backoff_attempts: collections.deque[int] = collections.deque(maxlen=100)
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.rng = rng or random.Random()
        self.log_interval = log_interval
        self.log_burst = log_burst
        self._ws = None
        self._key = ""
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        # figures
        self.connections = 0
        self.drops = 0
        self.bad_frames = 0
        self.pongs_sent = 0
        self._log_window = (0.0, 0)  # (window start, logged in it)
        self._suppressed = 0

    # --- subscriptions --------------------------------------------------------------------
    @property
    def registrations(self) -> list[tuple[str, str]]:
        return list(self.protocol.registrations)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def rejected(self) -> list[tuple[str, str, str]]:
        """The registrations KIS refused: (tr_id, tr_key, KIS's msg1)."""
        return list(self.protocol.rejected)

    async def subscribe(self, tr_id: str, tr_key: str) -> None:
        if self.protocol.add(tr_id, tr_key):
            await self._send_registration(tr_id, tr_key, subscribe=True)

    async def unsubscribe(self, tr_id: str, tr_key: str) -> None:
        self.protocol.remove(tr_id, tr_key)
        await self._send_registration(tr_id, tr_key, subscribe=False)

    async def _send_registration(self, tr_id: str, tr_key: str, *, subscribe: bool) -> None:
        ws = self._ws
        if ws is None:
            return  # sent when the next session starts
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(subscribe_message(self._key, tr_id, tr_key, subscribe=subscribe))

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    # --- the loop ----------------------------------------------------------------------------
    async def batches(self) -> AsyncIterator[Batch]:
        """Records as they come, across reconnects, until close()."""
        attempt = 0
        while not self._closing.is_set():
            started = time.monotonic()
            try:
                async for batch in self._session():
                    # A session that delivered for a while: the next drop starts over (one that
                    # drops right after its first frame keeps backing off: no reconnect storm).
                    if attempt and time.monotonic() - started >= STABLE_SESSION_SECONDS:
                        attempt = 0
                    yield batch
            except ApprovalRefused as exc:
                logger.error("%s; reconnecting with a new key", exc.message)
                if self._approval_key_refused is not None:
                    try:
                        await self._approval_key_refused(self._key)
                    except Exception:
                        logger.exception("Dropping the refused KIS approval key failed")
            except (
                OSError,
                TimeoutError,
                websockets.WebSocketException,
                KISError,
                redis.RedisError,  # the approval key comes through Redis (kis.token)
            ) as exc:
                if self._closing.is_set():
                    break
                logger.warning(
                    "KIS WebSocket %s: %s: %s",
                    "dropped" if self.connections else "connection failed",
                    type(exc).__name__,
                    exc,
                    extra={"metadata": {"url": self.url, "attempt": attempt}},
                )
            if self._closing.is_set():
                break
            delay = backoff_delay(
                attempt, base=self.backoff_base, cap=self.backoff_max, rng=self.rng
            )
            self.backoff_attempts.append(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _session(self) -> AsyncIterator[Batch]:
        key = await self._approval_key()
        async with websockets.connect(
            self.url,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            max_size=2**22,
            proxy=None,  # straight to KIS (and to the loopback fake), never via *_proxy variables
        ) as ws:
            if self._closing.is_set():
                return  # close() came while connecting: it found no socket to close
            self._key = key
            self._ws = ws
            self.connections += 1
            self._connected.set()
            try:
                for tr_id, tr_key in self.protocol.session_started():
                    await ws.send(subscribe_message(key, tr_id, tr_key))
                async for message in ws:
                    try:
                        batch, replies = self.protocol.handle(message)
                    except (ApprovalRefused, SessionInUse):
                        raise
                    except KISError as exc:
                        self._bad_frame(exc, message)
                        continue
                    except Exception as exc:  # a parser gap: still one bad frame, not the end
                        self._bad_frame(
                            KISWebSocketError(f"frame not readable: {type(exc).__name__}: {exc}"),
                            message,
                        )
                        continue
                    for reply in replies:
                        await ws.send(reply)
                        with contextlib.suppress(websockets.ConnectionClosed):
                            await ws.pong(reply.encode("utf-8"))
                        self.pongs_sent += 1
                    if batch is not None:
                        yield batch
                if not self._closing.is_set():
                    logger.warning(
                        "KIS WebSocket closed by the server (%s); reconnecting",
                        ws.close_reason or ws.close_code,
                    )
            finally:
                self._ws = None
                self._connected.clear()
                if not self._closing.is_set():
                    self.drops += 1

    def _bad_frame(self, exc: KISError, message) -> None:
        self.bad_frames += 1
        now = time.monotonic()
        start, logged = self._log_window
        if now - start >= self.log_interval:
            start, logged = now, 0
        if logged >= self.log_burst:
            self._suppressed += 1
            self._log_window = (start, logged)
            return
        text = message if isinstance(message, str) else repr(message)
        logger.warning(
            "KIS WebSocket frame skipped: %s%s",
            exc.message,
            f" ({self._suppressed} more skipped without a log line)" if self._suppressed else "",
            extra={
                "metadata": {
                    "error": exc.message,
                    "frame": text[:200],
                    "bad_frames": self.bad_frames,
                }
            },
        )
        self._suppressed = 0
        self._log_window = (start, logged + 1)

    async def close(self) -> None:
        self._closing.set()
        ws = self._ws
        if ws is not None:
            await ws.close()


# --- one session per process, shared by consumers ----------------------------------------------
DEFAULT_QUEUE_SIZE = 1000  # batches a consumer may fall behind before its oldest are dropped
READER_STOP_SECONDS = 2.0  # how long close() lets the reader finish before cancelling it
_LISTED = 6  # registrations named per consumer in a limit error

_END = object()  # a consumer's queue: no more batches

_sessions: dict[tuple[str, str], KISSession] = {}
_sessions_lock = threading.Lock()  # consumers may be made on any thread


def active_sessions() -> list[KISSession]:
    """The process's open shared sessions (diagnostics, tests)."""
    with _sessions_lock:
        return list(_sessions.values())


def _shared_session(
    key: tuple[str, str], build: Callable[[], tuple[KISWebSocket, list]]
) -> KISSession:
    """The process's session for `key` on the running loop: the open one, else build()'s."""
    loop = asyncio.get_running_loop()
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None and session.loop is not loop:
            if session.loop.is_closed() or not session.loop.is_running():
                # Left by an event loop that has ended without closing it (its socket and
                # resources went with that loop): forget it.
                logger.warning("Forgetting a KIS WebSocket session left by an ended event loop")
                del _sessions[key]
                session = None
            else:
                raise KISWebSocketError(
                    f"The KIS WebSocket session of {key[0]} is open on another event loop: KIS "
                    "allows one session per app key, so run its consumers on one loop."
                )
        if session is None:
            client, resources = build()
            session = KISSession(client, key=key, resources=resources, loop=loop)
            _sessions[key] = session
        return session


class KISSession:
    """One KISWebSocket read by one task for several consumers (see the module doc). Made and
    closed by the consumers (KISSessionConsumer); nothing else needs to call it."""

    def __init__(
        self,
        client: KISWebSocket,
        *,
        key: tuple[str, str],
        resources: list,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self._resources = list(resources)  # closed (aclose) with the session
        self.consumers: list[KISSessionConsumer] = []
        self._holders: dict[tuple[str, str], list[KISSessionConsumer]] = {}
        self._reader: asyncio.Task | None = None
        self.closed = False
        self.unclaimed = 0  # batches no consumer was registered for (e.g. just unsubscribed)

    # --- consumers -------------------------------------------------------------------------
    def join(self, consumer: KISSessionConsumer) -> None:
        if consumer not in self.consumers:
            self.consumers.append(consumer)

    async def subscribe(self, consumer: KISSessionConsumer, tr_id: str, tr_key: str) -> None:
        registration = (tr_id, tr_key)
        if registration in consumer._registrations:
            return
        try:
            await self.client.subscribe(tr_id, tr_key)  # nothing sent if another holds it
        except RegistrationLimitError:
            raise RegistrationLimitError(self._limit_message(consumer, tr_id, tr_key)) from None
        self._holders.setdefault(registration, []).append(consumer)
        consumer._add(registration)
        self.start_reader()

    async def unsubscribe(self, consumer: KISSessionConsumer, tr_id: str, tr_key: str) -> None:
        registration = (tr_id, tr_key)
        if registration not in consumer._registrations:
            raise KISWebSocketError(
                f"{consumer.name} cannot unsubscribe from {tr_id} {tr_key}: not subscribed."
            )
        consumer._discard(registration)
        holders = self._holders.get(registration, [])
        if consumer in holders:
            holders.remove(consumer)
        if not holders:
            self._holders.pop(registration, None)
            # Not there any more when KIS refused it (kept in `rejected`).
            if registration in self.client.protocol.registrations:
                await self.client.unsubscribe(tr_id, tr_key)

    async def leave(self, consumer: KISSessionConsumer) -> None:
        """A consumer is done: its registrations go (unless another holds them); the session
        closes with its last consumer."""
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        if not self.consumers:
            await self.close()
            return
        for tr_id, tr_key in list(consumer._registrations):
            await self.unsubscribe(consumer, tr_id, tr_key)

    def _limit_message(self, consumer: KISSessionConsumer, tr_id: str, tr_key: str) -> str:
        live = self.client.protocol.registrations
        held = []
        for holder in self.consumers:
            mine = [f"{t} {k}" for t, k in holder.registrations if (t, k) in live]
            listed = ", ".join(mine[:_LISTED])
            if len(mine) > _LISTED:
                listed += f" and {len(mine) - _LISTED} more"
            held.append(f"{holder.name} {len(mine)}" + (f" ({listed})" if mine else ""))
        limit = self.client.protocol.max_registrations
        return (
            f"{consumer.name} cannot subscribe to {tr_id} {tr_key}: KIS allows at most {limit} "
            f"registrations per session (one session per app key, shared by this process) and "
            f"all are in use: {'; '.join(held)}."
        )

    # --- the reader ------------------------------------------------------------------------
    def start_reader(self) -> None:
        if self._reader is None and not self.closed:
            self._reader = self.loop.create_task(self._read(), name="kis-ws-session-reader")

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            async for batch in self.client.batches():
                self.dispatch(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: the client handles every network failure itself
            logger.exception("The shared KIS WebSocket session's reader stopped")
            error = exc
        if not self.closed:  # ended without close(): its consumers must not wait forever
            for consumer in list(self.consumers):
                consumer._end(error or KISWebSocketError("the KIS WebSocket session ended"))
            await self.close(reader_done=True)

    def dispatch(self, batch: Batch) -> None:
        """Hand `batch` to the consumers registered for it, never waiting for any."""
        claimed = False
        for consumer in self.consumers:
            keys = consumer._keys.get(batch.tr_id)
            if not keys:
                continue
            if batch.tr_id == TR_TRADES:
                mine = [r for r in batch.records if r.tick.symbol in keys]
                if not mine:
                    continue
                consumer._offer(
                    batch if len(mine) == len(batch.records) else Batch(TR_TRADES, mine)
                )
            else:
                consumer._offer(batch)
            claimed = True
        if not claimed:
            self.unclaimed += 1

    async def close(self, *, reader_done: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        with _sessions_lock:
            if _sessions.get(self.key) is self:
                del _sessions[self.key]
        for consumer in list(self.consumers):
            consumer._end(None)
        self.consumers.clear()
        await self.client.close()
        reader = self._reader
        if reader is not None and not reader_done and not reader.done():
            # asyncio.wait, not wait_for: a reader cancelled by someone else must not raise here
            await asyncio.wait({reader}, timeout=READER_STOP_SECONDS)
            if not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
        for resource in self._resources:
            try:
                await resource.aclose()
            except Exception:
                logger.exception("Closing a resource of the KIS WebSocket session failed")
        self._resources = []


class KISSessionConsumer:
    """One user of the process's shared KIS WebSocket session (see the module doc).

    `build()` -> (KISWebSocket, resources to aclose with it) makes the session when none is
    open for (url, app key); session_consumer() gives the one from settings. Making a consumer
    opens nothing: the session is joined at the first subscribe() / batches(), on the running
    loop. The figures (connections, drops, bad_frames) are the shared session's."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        app_key: str,
        build: Callable[[], tuple[KISWebSocket, list]],
        queue_size: int = DEFAULT_QUEUE_SIZE,
        log_interval: float = 10.0,
    ) -> None:
        if not name or not name.strip():
            raise KISWebSocketError("A KIS WebSocket session consumer needs a name.")
        if queue_size < 1:
            raise KISWebSocketError(f"queue_size {queue_size} must be at least 1.")
        if not url.startswith(("ws://", "wss://")):
            raise KISWebSocketError(f"KIS WebSocket URL {url!r} is not ws:// or wss://.")
        self.name = name
        self.url = url
        self.key = (url, app_key_id(app_key))
        self._build = build
        self.queue_size = queue_size
        self.log_interval = log_interval
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self._registrations: dict[tuple[str, str], None] = {}  # in subscription order
        self._keys: dict[str, set[str]] = {}  # tr_id -> tr_keys (the reader's lookup)
        self.session: KISSession | None = None
        self._closed = False
        self._reading = False
        self._error: BaseException | None = None
        # figures
        self.batches_received = 0
        self.dropped_batches = 0
        self.dropped_records = 0
        self._drops_logged = 0
        self._drop_logged_at: float | None = None

    def __repr__(self) -> str:
        return f"KISSessionConsumer({self.name!r}, {len(self._registrations)} registration(s))"

    # --- the KISWebSocket-like API ---------------------------------------------------------
    @property
    def registrations(self) -> list[tuple[str, str]]:
        return list(self._registrations)

    @property
    def closed(self) -> bool:
        return self._closed

    async def subscribe(self, tr_id: str, tr_key: str) -> None:
        await self._attach().subscribe(self, tr_id, tr_key)

    async def unsubscribe(self, tr_id: str, tr_key: str) -> None:
        session = self.session
        if session is None or session.closed:
            raise KISWebSocketError(
                f"{self.name} cannot unsubscribe from {tr_id} {tr_key}: not subscribed."
            )
        await session.unsubscribe(self, tr_id, tr_key)

    async def batches(self) -> AsyncIterator[Batch]:
        """This consumer's batches until close() (or the session failing:
        KISWebSocketError)."""
        if self._reading:
            raise KISWebSocketError(
                f"{self.name}: batches() is already being read; one reader per consumer."
            )
        if self._closed and self._queue.empty():
            return
        self._reading = True
        try:
            if not self._closed:
                self._attach().start_reader()
            while True:
                item = await self._queue.get()
                if item is _END:
                    if self._error is not None:
                        raise KISWebSocketError(
                            f"{self.name}: the shared KIS WebSocket session stopped: {self._error}"
                        ) from self._error
                    return
                yield item
        finally:
            self._reading = False

    async def close(self) -> None:
        if self._closed:
            return
        self._end(None)
        session = self.session  # kept: the figures stay readable after close()
        if session is not None and not session.closed:
            await session.leave(self)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def connections(self) -> int:
        return self._client.connections if self._client is not None else 0

    @property
    def drops(self) -> int:
        return self._client.drops if self._client is not None else 0

    @property
    def bad_frames(self) -> int:
        return self._client.bad_frames if self._client is not None else 0

    @property
    def rejected(self) -> list[tuple[str, str, str]]:
        """The registrations of this consumer that KIS refused."""
        if self._client is None:
            return []
        return [r for r in self._client.protocol.rejected if (r[0], r[1]) in self._registrations]

    # --- inside ----------------------------------------------------------------------------
    @property
    def _client(self) -> KISWebSocket | None:
        return self.session.client if self.session is not None else None

    def _attach(self) -> KISSession:
        if self._closed:
            raise KISWebSocketError(f"{self.name}: this KIS WebSocket consumer is closed.")
        session = self.session
        if session is None or session.closed:
            session = _shared_session(self.key, self._build)
            session.join(self)
            self.session = session
        return session

    def _add(self, registration: tuple[str, str]) -> None:
        self._registrations[registration] = None
        self._keys.setdefault(registration[0], set()).add(registration[1])

    def _discard(self, registration: tuple[str, str]) -> None:
        self._registrations.pop(registration, None)
        keys = self._keys.get(registration[0])
        if keys is not None:
            keys.discard(registration[1])
            if not keys:
                del self._keys[registration[0]]

    def _offer(self, batch: Batch) -> None:
        if self._closed:
            return
        self.batches_received += 1
        if self._queue.full():
            self._drop_oldest()
        self._queue.put_nowait(batch)

    def _drop_oldest(self) -> None:
        dropped = self._queue.get_nowait()  # a batch: nothing is offered after _END
        self.dropped_batches += 1
        self.dropped_records += len(dropped.records)
        now = time.monotonic()
        if self._drop_logged_at is not None and now - self._drop_logged_at < self.log_interval:
            return
        logger.warning(
            "KIS WebSocket consumer %s is too slow: %d batch(es) dropped (%d in all; queue of %d)",
            self.name,
            self.dropped_batches - self._drops_logged,
            self.dropped_batches,
            self.queue_size,
            extra={
                "metadata": {
                    "consumer": self.name,
                    "dropped_batches": self.dropped_batches,
                    "dropped_records": self.dropped_records,
                    "queue_size": self.queue_size,
                }
            },
        )
        self._drops_logged = self.dropped_batches
        self._drop_logged_at = now

    def _end(self, error: BaseException | None) -> None:
        """No more batches: what is queued is still read, then batches() ends (or raises)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        if self._queue.full():
            self._drop_oldest()
        self._queue.put_nowait(_END)


def client_from_config(config) -> tuple[KISWebSocket, list]:
    """A KISWebSocket for `config` (kis.config.KISConfig) with the approval key shared through
    Redis (kis.token.TokenStore; dropped when KIS refuses it), and the resources it opened."""
    import httpx
    import redis.asyncio
    from django.conf import settings

    from kis.token import TokenStore

    cache = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    http = httpx.AsyncClient(timeout=config.timeout)
    store = TokenStore(config, redis=cache, http=http)

    async def approval_key_refused(_key: str) -> None:
        # KIS refused the cached key: drop it so that the next session issues a new one.
        await cache.delete(config.approval_key_key)

    client = KISWebSocket(
        url=config.ws_url,
        approval_key=store.approval_key,
        approval_key_refused=approval_key_refused,
    )
    return client, [http, cache]


def session_consumer(
    name: str, *, config=None, queue_size: int = DEFAULT_QUEUE_SIZE
) -> KISSessionConsumer:
    """A consumer of the process's KIS WebSocket session for `config` (default
    KISConfig.from_settings())."""
    if config is None:
        from kis.config import KISConfig

        config = KISConfig.from_settings()
    return KISSessionConsumer(
        name,
        url=config.ws_url,
        app_key=config.app_key,
        build=lambda: client_from_config(config),
        queue_size=queue_size,
    )
