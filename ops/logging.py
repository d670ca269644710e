"""Logging for QB: secrets redacted from every record, and WARNING and above into system_logs.

SystemLogHandler never blocks the caller and never recurses. emit() only formats the record and
appends it to a bounded in-memory buffer; a daemon thread writes batches on its own psycopg
connection. Not Django's thread-local connection: the writes then neither join nor break the
caller's transaction (a rolled-back request keeps its error log), and pytest-django's database
blocker does not apply to them. While the database is down the handler keeps the newest
`capacity` records, says so once on stderr (never through logging, which would recurse),
retries with backoff and writes the backlog when the database returns.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

import psycopg

from qbsite.db import connect

REDACTED = "***"

# Secrets shorter than this are not replaced by value (a 2-letter dev password would blank
# every word containing it); the key=value patterns below still catch them.
_MIN_SECRET_LENGTH = 6

# Names whose values are secret, as they appear in KIS requests/answers, headers and URLs.
_SECRET_NAMES = (
    r"app[_-]?key|app[_-]?secret|secret[_-]?key|access[_-]?token|refresh[_-]?token"
    r"|approval[_-]?key"
    r"|authorization|password|passwd"
)
# "appkey": "value" / 'appsecret': 'value' (JSON, Python reprs).
_QUOTED_PAIR_RE = re.compile(
    rf"""(?P<q>["'])(?P<key>[\w-]*(?:{_SECRET_NAMES}))(?P=q)(?P<sep>\s*:\s*)"""
    r"""(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s,}\]]+)""",
    re.IGNORECASE,
)
# appkey=value (query strings, kwargs) / Authorization: Bearer value (headers).
_PLAIN_PAIR_RE = re.compile(
    rf"""(?P<key>[\w-]*(?:{_SECRET_NAMES}))(?P<sep>\s*[:=]\s*)"""
    r"""(?P<scheme>(?:bearer|basic|token)\s+)?(?P<value>[^\s&,;"'}\]]+)""",
    re.IGNORECASE,
)

# A dict key (metadata) whose value is secret as a whole.
_SECRET_KEY_RE = re.compile(rf"[\w-]*(?:{_SECRET_NAMES})", re.IGNORECASE)


def _quoted_pair(match: re.Match) -> str:
    value = match["value"]
    quote_char = value[0] if value[0] in "\"'" else ""
    return f"{match['q']}{match['key']}{match['q']}{match['sep']}{quote_char}{REDACTED}{quote_char}"


def _plain_pair(match: re.Match) -> str:
    return f"{match['key']}{match['sep']}{match['scheme'] or ''}{REDACTED}"


def _configured_secrets() -> tuple[str, ...]:
    """The secret values in settings: KIS keys, SECRET_KEY, database and Redis passwords."""
    from django.conf import settings

    if not settings.configured:
        return ()
    values = [
        getattr(settings, "KIS_APP_KEY", ""),
        getattr(settings, "KIS_APP_SECRET", ""),
        getattr(settings, "SECRET_KEY", ""),
        # The KIS account number (CANO, 8 digits): KIS echoes it in paging contexts and
        # answers; a second net behind kis.client's own masking.
        (getattr(settings, "KIS_ACCOUNT", "") or "").partition("-")[0],
    ]
    for database in getattr(settings, "DATABASES", {}).values():
        values.append(database.get("PASSWORD") or "")
    for name in ("DATABASE_URL", "REDIS_URL"):
        url = getattr(settings, name, None)
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                values += [password, unquote(password)]
    return tuple(v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH)


class RedactSecretsFilter(logging.Filter):
    """Replaces secrets in a record (message, arguments, exception text, metadata) with ***.

    Two nets: the configured secret values wherever they appear (also percent-encoded), and
    key/value patterns (appkey, appsecret, secretkey, access_token, approval_key,
    authorization, password) in JSON, headers and query strings. The record is changed in
    place, so every handler after this filter sees the redacted text.
    """

    def __init__(self, name: str = ""):
        super().__init__(name)
        self._secrets: tuple[str, ...] | None = None
        self._secrets_re: re.Pattern | None = None

    def _values_re(self) -> re.Pattern | None:
        try:
            secrets = _configured_secrets()
        except Exception:  # settings broken: the patterns still apply
            secrets = ()
        if secrets != self._secrets:
            variants = {v for s in secrets for v in (s, quote(s, safe=""))}
            self._secrets = secrets
            self._secrets_re = (
                re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))
                if variants
                else None
            )
        return self._secrets_re

    def redact(self, text: str) -> str:
        values_re = self._values_re()
        if values_re is not None:
            text = values_re.sub(REDACTED, text)
        text = _QUOTED_PAIR_RE.sub(_quoted_pair, text)
        return _PLAIN_PAIR_RE.sub(_plain_pair, text)

    def _redact_data(self, data):
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {
                key: REDACTED
                if isinstance(key, str) and _SECRET_KEY_RE.fullmatch(key)
                else self._redact_data(value)
                for key, value in data.items()
            }
        if isinstance(data, list | tuple):
            return [self._redact_data(value) for value in data]
        return data

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Formatting fails anyway (the handler reports it): redact what it will print.
            record.msg = self.redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(self.redact(repr(arg)) for arg in record.args)
        else:
            record.msg = self.redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        metadata = getattr(record, "metadata", None)
        if metadata is not None:
            record.metadata = self._redact_data(metadata)
        return True


# --- system_logs --------------------------------------------------------------------------

TABLE = "system_logs"  # ops.models.SystemLog._meta.db_table (a test keeps them equal)
_INSERT_SQL = (
    f"INSERT INTO {TABLE} (timestamp, level, component, message, metadata)"
    " SELECT t, l, c, m, j::jsonb"
    " FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " AS u(t, l, c, m, j)"
)
_COMPONENT_MAX_LENGTH = 100  # SystemLog.component
# Keys of DATABASES["default"]["OPTIONS"] that are Django's, not libpq's.


def level_name(levelno: int) -> str:
    """The system_logs level for any level number (custom levels map to the one below)."""
    for number, name in (
        (logging.CRITICAL, "CRITICAL"),
        (logging.ERROR, "ERROR"),
        (logging.WARNING, "WARNING"),
        (logging.INFO, "INFO"),
    ):
        if levelno >= number:
            return name
    return "DEBUG"


_handlers: weakref.WeakSet[SystemLogHandler] = weakref.WeakSet()


class SystemLogHandler(logging.Handler):
    """Writes records to system_logs in batches from a daemon thread (see the module doc).

    database_url: where to write; None = settings.DATABASES["default"], read at each connect
    (so under pytest it is the test database). It may be changed on a live handler.
    """

    # The handler's own module and the database's log lines would feed back into themselves.
    IGNORED_LOGGERS = ("ops.logging", "django.db.backends", "psycopg")
    # Their WARNINGs are 4xx answers: the API working as designed, and a flood under a scan.
    CLIENT_ERROR_LOGGERS = ("django.request", "django.server")

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        database_url: str | None = None,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        capacity: int = 10_000,
        max_backoff: float = 30.0,
        connect_timeout: int = 3,
    ):
        super().__init__(level)
        if batch_size < 1 or capacity < 1 or flush_interval <= 0:
            raise ValueError("batch_size and capacity must be >= 1, flush_interval > 0")
        self.database_url = database_url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.capacity = capacity
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self._closed = False
        self._local = threading.local()
        self._reset_state()
        _handlers.add(self)

    def _reset_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._buffer: collections.deque[tuple] = collections.deque()
        self._inflight: list[tuple] = []
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._stopping = False
        self._flush_wanted = False
        self._retry_at: float | None = None
        self._backoff = 0.0
        self._down = False
        # Counters: every enqueued record ends written, dropped (buffer full) or discarded
        # (rejected by the database); flush() waits for `done` to reach what it saw enqueued.
        self._enqueued = 0
        self._done = 0
        self._written = 0
        self._batches = 0
        self._dropped = 0
        self._discarded = 0
        self._failures = 0

    def _after_fork_in_child(self) -> None:
        # The parent writes what it had buffered; its thread does not exist here, and its
        # connection's socket is the parent's: forget it without closing (closing would
        # terminate the parent's session).
        self._reset_state()

    # --- the caller's side: format and enqueue, never wait ---------------------------------

    def _ignored(self, record: logging.LogRecord) -> bool:
        name = record.name
        if any(name == n or name.startswith(n + ".") for n in self.IGNORED_LOGGERS):
            return True
        if record.levelno < logging.ERROR and name in self.CLIENT_ERROR_LOGGERS:
            return True
        return self._thread is not None and threading.current_thread() is self._thread

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed or self._ignored(record) or getattr(self._local, "active", False):
            return
        # A str() of an argument that logs again lands here: drop that inner record.
        self._local.active = True
        try:
            self._enqueue(self._row(record))
        except Exception:
            self.handleError(record)
        finally:
            self._local.active = False

    def _row(self, record: logging.LogRecord) -> tuple:
        metadata: dict = {}
        extra = getattr(record, "metadata", None)
        if isinstance(extra, dict):
            metadata.update(extra)
        elif extra is not None:
            metadata["extra"] = extra
        metadata.update(
            module=record.module,
            func=record.funcName,
            line=record.lineno,
            process=record.process,
            thread=record.threadName,
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            metadata["exception"] = record.exc_text
        if record.stack_info:
            metadata["stack"] = record.stack_info
        try:
            metadata_json = json.dumps(metadata, default=str, ensure_ascii=False, allow_nan=False)
        except ValueError:  # NaN / Infinity are not JSON, and jsonb refuses them
            metadata_json = json.dumps(_finite(metadata), default=str, ensure_ascii=False)
        return (
            datetime.fromtimestamp(record.created, tz=UTC),
            level_name(record.levelno),
            _storable(record.name[:_COMPONENT_MAX_LENGTH]),
            _storable(record.getMessage()),
            # jsonb cannot hold NUL either, even escaped.
            _storable(metadata_json).replace("\\u0000", "\\ufffd"),
        )

    def _enqueue(self, row: tuple) -> None:
        if self._pid != os.getpid():  # forked without os.register_at_fork (not expected)
            self._reset_state()
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self._dropped += 1
                self._done += 1
            self._buffer.append(row)
            self._enqueued += 1
            size = len(self._buffer)
            if size == 1 or size == self.batch_size:
                self._wake.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="qb-system-logs", daemon=True
                )
                self._thread.start()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Writes what was logged before this call. True when all of it is done (written, or
        dropped while the buffer was full); False when a write attempt fails or on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            if self._done >= target or self._thread is None:
                return self._done >= target
            failures = self._failures
            self._flush_wanted = True
            self._wake.notify_all()
            while self._done < target:
                if self._failures != failures:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return True

    def close(self) -> None:
        if not self._closed:
            self.flush(timeout=5.0)
            self._closed = True
            with self._lock:
                self._stopping = True
                self._wake.notify_all()
                thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
        super().close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "pending": len(self._buffer) + len(self._inflight),
                "written": self._written,
                "batches": self._batches,
                "dropped": self._dropped,
                "discarded": self._discarded,
                "failures": self._failures,
            }

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wait_for_work()
            with self._lock:
                if self._stopping and not (self._buffer or self._inflight):
                    break
                if self._stopping and self._down:
                    break  # closing with the database down: nothing more can be done
                self._flush_wanted = False
            self._write_pending()
        self._disconnect()

    def _wait_for_work(self) -> None:
        with self._wake:
            if self._retry_at is not None:  # backing off; a flush() or close() retries now
                while not (self._flush_wanted or self._stopping):
                    remaining = self._retry_at - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                return
            while not (self._buffer or self._inflight or self._stopping):
                self._wake.wait()
            # Gather a batch: a full one, or what came within flush_interval.
            deadline = time.monotonic() + self.flush_interval
            while len(self._buffer) < self.batch_size and not (
                self._flush_wanted or self._stopping
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                if not self._inflight:
                    count = min(self.batch_size, len(self._buffer))
                    self._inflight = [self._buffer.popleft() for _ in range(count)]
                batch = self._inflight
            if not batch:
                self._disconnect()  # idle: hold no connection (and no test database open)
                return
            written, discarded = self._write(batch)
            with self._lock:
                if written is None:
                    self._failures += 1
                    self._backoff = min(self.max_backoff, self._backoff * 2 or 0.5)
                    self._retry_at = time.monotonic() + self._backoff
                    self._wake.notify_all()
                    return
                self._inflight = []
                self._written += written
                self._discarded += discarded
                self._done += written + discarded
                self._batches += 1
                self._retry_at = None
                self._backoff = 0.0
                was_down, self._down = self._down, False
                dropped = self._dropped
                self._wake.notify_all()
            if was_down:
                _stderr(
                    f"qb system_logs: database is back; backlog written"
                    f" ({dropped} records dropped while the buffer was full)."
                )

    def _write(self, batch: list[tuple]) -> tuple[int | None, int]:
        """(rows written, rows discarded); (None, 0) when the database cannot take them now."""
        try:
            conn = self._connection()
        except Exception as exc:  # unreachable, wrong database, no settings, a bad URL
            self._disconnect()
            self._report_down(exc)
            return None, 0
        try:
            self._insert(conn, batch)
            return len(batch), 0
        except (psycopg.DataError, psycopg.IntegrityError, ValueError) as exc:
            # Rows the database refuses. _row() makes every record storable, so this is a bug;
            # retrying would fail forever and hold everything behind it: give the batch up.
            self._disconnect()
            _stderr(
                f"qb system_logs: discarded {len(batch)} records the database refused"
                f" ({_describe(exc)})."
            )
            return 0, len(batch)
        except Exception as exc:  # connection lost, no table yet (before migrate), read-only...
            self._disconnect()
            self._report_down(exc)
            return None, 0

    @staticmethod
    def _insert(conn: psycopg.Connection, rows: list[tuple]) -> None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        with conn.cursor() as cursor:
            cursor.execute(_INSERT_SQL, columns)
        conn.commit()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.database_url,
                application_name="qb-system-logs",
                autocommit=False,
                connect_timeout=self.connect_timeout,
                # A stuck insert (a lock) becomes an error and a retry, not a hung writer.
                options="-c statement_timeout=30000",
            )
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _report_down(self, exc: BaseException) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        _stderr(
            f"qb system_logs: database unavailable ({_describe(exc)}); keeping up to"
            f" {self.capacity} records in memory and retrying."
        )


def _storable(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, and valid UTF-8 (lone surrogates, e.g. from undecodable
    file names, become '?')."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _finite(data):
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return str(data)
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return RedactSecretsFilter().redact(f"{type(exc).__name__}: {first_line}")


def _stderr(line: str) -> None:
    # Straight to stderr: through logging it would come back to this handler.
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork_in_child()


def _flush_all_at_exit() -> None:
    for handler in list(_handlers):
        if not handler._closed:
            handler.flush(timeout=5.0)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)


def close_all_handlers() -> None:
    """Write what is pending and close every handler's connection (tests, before the test
    database is dropped; the handlers cannot log afterwards)."""
    for handler in list(_handlers):
        handler.close()
