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
  provider issues a new one, and the client reconnects.
- PINGPONG: answered at once, with the same text (KIS's older sample) and a pong frame carrying
  it (the current one); KIS drops a session that does not answer.
- A malformed frame (kis.frames.FrameError, kis.crypto.DecryptError) is logged (WARNING on
  "qb.kis", so system_logs; at most `log_burst` per `log_interval` seconds, the rest counted)
  and skipped; the stream goes on.

The protocol itself is `KISProtocol`, with no I/O: `handle(text)` -> (batch or None, replies to
send). A test drives it with strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import websockets

from kis import crypto
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
OPEN_TIMEOUT_SECONDS = 10.0


class KISWebSocketError(KISError):
    code = "kis_ws_error"


class RegistrationLimitError(KISWebSocketError):
    code = "kis_ws_registration_limit"


class ApprovalRefused(KISWebSocketError):
    code = "kis_ws_approval_refused"


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
        the approval key."""
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
            try:
                async for batch in self._session():
                    attempt = 0  # a session that delivered: the next drop starts over
                    yield batch
            except ApprovalRefused as exc:
                logger.error("%s; reconnecting with a new key", exc.message)
                if self._approval_key_refused is not None:
                    try:
                        await self._approval_key_refused(self._key)
                    except Exception:
                        logger.exception("Dropping the refused KIS approval key failed")
            except (OSError, TimeoutError, websockets.WebSocketException, KISError) as exc:
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
                    except ApprovalRefused:
                        raise
                    except KISError as exc:
                        self._bad_frame(exc, message)
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
