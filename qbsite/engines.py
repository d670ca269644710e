"""The engines runtime: drives Engine objects (qbsite/engine_base.py) on the Redis channel layer.

All the engines of one process share one asyncio loop and one channel layer. Per engine:
- a worker channel `engine.<name>`, added to the group `events.<type>` of each subscribed type;
  the adds are repeated with every heartbeat, so neither `group_expiry` nor a Redis restart
  that lost the group keys leaves an engine deaf for long;
- `setup()` (retried with backoff until it succeeds), then a receive loop delivering every
  `event.message` envelope to `handle()`, and `loop()` as a supervised task when `has_loop`;
- a heartbeat every HEARTBEAT_SECONDS: the `heartbeat` event {engine, pid, host, started_at,
  ready, stats} and the hash heartbeat_key(engine), expiring after three periods.

Why the layer API (`layer.receive`) and not channels.worker.Worker: Worker builds a new ASGI
application instance per message through ChannelNameRouter (an engine is one long-lived
object with state and a loop), has no heartbeat, no backoff, and lets a receive error end
the worker. Here the receive, the heartbeat and the loop each have their own guard.

Resilience (never a crash loop):
- Redis or PostgreSQL going away is an outage of a *dependency*, shared by every engine of
  the process: the first failure logs once (ERROR), then one prober retries the dependency
  with capped exponential backoff and jitter while the engines that hit it wait; the return
  is logged once (WARNING). Redis connection errors anywhere, and PostgreSQL connection
  errors escaping handle() / loop() / setup(), go this way.
- Any other exception escaping handle() is logged on `qb.engine.<name>` (and so reaches
  system_logs) and the event is dropped; one escaping loop() is logged and loop() restarted
  after a backoff. The channel layer carries notifications only (DESIGN.md): what must survive
  is in PostgreSQL or a Redis Stream, and engines rebuild from there.

Stopping (SIGINT / SIGTERM, or request_stop()): `stopping` is set on every engine, receives
and heartbeats are cancelled, loops get ENGINE_STOP_TIMEOUT_SECONDS to return, then `stop()` is
awaited (same timeout) on each. The channels are not discarded from their groups: several
processes may run the same engine on the same channel name; what is left queued expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import importlib.util
import inspect
import json
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Iterable

import psycopg
import redis.asyncio
import redis.exceptions
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.utils.module_loading import import_string

from marketdata.keys import heartbeat_key
from qbsite import events
from qbsite.engine_base import Engine
from qbsite.exceptions import QBError

logger = logging.getLogger("qb.engines")

# What "Redis went away" looks like: redis-py's errors, and raw socket errors from the layer.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
RECEIVE_ERRORS = (*REDIS_ERRORS, ConnectionError, OSError)
# What "PostgreSQL went away" looks like, through Django or psycopg directly.
DB_ERRORS = (
    DjangoOperationalError,
    DjangoInterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


class EngineError(QBError, ImproperlyConfigured):
    code = "engine"


# --- The registry --------------------------------------------------------------------------


def registry() -> dict[str, str]:
    """Every engine: name -> dotted path, from each installed app's `engines` ENGINES, plus
    settings.QB_EXTRA_ENGINES (a dict, for deployments and tests)."""
    found: dict[str, str] = {}
    owners: dict[str, str] = {}
    sources = []
    for app in apps.get_app_configs():
        module_name = f"{app.name}.engines"
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        module = importlib.import_module(module_name)
        sources.append((module_name, getattr(module, "ENGINES", {})))
    sources.append(("settings.QB_EXTRA_ENGINES", getattr(settings, "QB_EXTRA_ENGINES", {}) or {}))
    for source, engines in sources:
        if not isinstance(engines, dict):
            raise EngineError(f"{source}.ENGINES must be a dict of name -> dotted path.")
        for name, path in engines.items():
            if name in found and found[name] != path:
                raise EngineError(
                    f"Engine {name!r} is registered twice: {found[name]} ({owners[name]}) "
                    f"and {path} ({source}). Engine names must be unique."
                )
            found[name] = path
            owners[name] = source
    return dict(sorted(found.items()))


def load_engine_class(name_or_path: str, *, known: dict[str, str] | None = None) -> type[Engine]:
    """The Engine subclass for a registered name or a dotted path (class or module).

    Raises EngineError naming what is wrong: an unknown name (listing the valid ones), a module
    that does not exist yet, a path that is not an Engine.
    """
    known = registry() if known is None else known
    if name_or_path in known:
        name, path = name_or_path, known[name_or_path]
    elif "." in name_or_path:
        name, path = None, name_or_path
    else:
        valid = ", ".join(known) or "none"
        raise EngineError(
            f"Unknown engine {name_or_path!r}. Registered engines: {valid} "
            "(or give the dotted path of an Engine class)."
        )
    target = _import(path, name)
    if inspect.ismodule(target):
        candidates = [
            obj
            for obj in vars(target).values()
            if inspect.isclass(obj)
            and issubclass(obj, Engine)
            and obj is not Engine
            and obj.__module__ == target.__name__
            and (name is None or obj.name == name)
        ]
        if len(candidates) != 1:
            raise EngineError(
                f"Module {path} must define exactly one Engine subclass named {name!r}; "
                f"found {len(candidates)}."
            )
        target = candidates[0]
    if not (inspect.isclass(target) and issubclass(target, Engine)):
        raise EngineError(f"{path} is not an Engine subclass (qbsite.engine_base.Engine).")
    if not target.name:
        raise EngineError(f"{path} has no `name`.")
    if name is not None and target.name != name:
        raise EngineError(
            f"Engine {name!r} is registered as {path}, whose name is {target.name!r}."
        )
    for event_type in target.subscribes:
        events.group_name(event_type)  # an unknown event type is an error now, not deafness
    return target


def _import(path: str, name: str | None):
    label = f"Engine {name!r} ({path})" if name else path
    missing = None
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        # `path` may be module.Class (tried below); a missing *dependency* is another story.
        if exc.name != path and not (exc.name and path.startswith(f"{exc.name}.")):
            raise EngineError(f"{label} cannot be imported: {exc}.") from exc
        missing = exc.name
    try:
        return import_string(path)
    except ImportError as exc:
        module = getattr(exc, "name", None) or missing
        if isinstance(exc, ModuleNotFoundError) or module == path:
            raise EngineError(
                f"{label} is not available: module {module} does not exist "
                "(not written yet, or a typo in the registry)."
            ) from exc
        raise EngineError(f"{label} cannot be imported: {exc}.") from exc


# --- Backoff and dependency outages ---------------------------------------------------------


class Backoff:
    """Capped exponential delays with "equal jitter" (half fixed, half random), so that many
    engines retrying at once spread out and a retry never comes back at once."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class Dependency:
    """Redis or PostgreSQL for all the engines of this process: down or up, logged once each
    way; one prober task retries it with backoff while callers of failed() wait."""

    def __init__(self, runtime: Runtime, label: str, probe) -> None:
        self.runtime = runtime
        self.label = label
        self.probe = probe
        self.up = asyncio.Event()
        self.up.set()
        self.down_since: float | None = None
        self.outages = 0
        self._prober: asyncio.Task | None = None

    async def failed(self, exc: BaseException, where: str) -> bool:
        """Report a failure; if the dependency is down, wait until it is back (or the runtime
        stops) and return True. False: it answers, so the failure was something else."""
        if await self.report(exc, where):
            await _wait_any(self.up, self.runtime.stopping)
            return True
        return False

    async def report(self, exc: BaseException, where: str) -> bool:
        """True if the dependency is down. A failure while the probe still answers is not an
        outage: after a restart, pooled connections to the old server fail once each."""
        if not self.up.is_set():
            return True
        try:
            await asyncio.wait_for(self.probe(), timeout=2)
        except Exception:
            pass
        else:
            logger.debug(
                "%s error in %s but %s answers: %s", type(exc).__name__, where, self.label, exc
            )
            return False
        if self.up.is_set():  # another task may have marked it down during the probe
            self.up.clear()
            self.outages += 1
            self.down_since = time.monotonic()
            logger.error(
                "%s unavailable (%s in %s: %s); engines wait and retry with backoff.",
                self.label,
                type(exc).__name__,
                where,
                exc,
            )
            self._prober = asyncio.create_task(self._probe_until_up())
        return True

    async def _probe_until_up(self) -> None:
        backoff = self.runtime.new_backoff()
        while not self.runtime.stopping.is_set():
            await _sleep_unless(self.runtime.stopping, backoff.next())
            if self.runtime.stopping.is_set():
                return
            try:
                await self.probe()
            except Exception as exc:  # still down; said so once already
                logger.debug("%s still unavailable: %s", self.label, exc)
                continue
            logger.warning(
                "%s is back after %.1f s; engines resume.",
                self.label,
                time.monotonic() - (self.down_since or time.monotonic()),
            )
            self.down_since = None
            self.up.set()
            return

    def cancel(self) -> None:
        if self._prober is not None:
            self._prober.cancel()


async def _wait_any(*flags: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(flag.wait()) for flag in flags]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_unless(flag: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(flag.wait(), timeout=seconds)


def _ping_database() -> None:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        connection.close()  # a dead connection must not be handed out again
        raise


# --- The runtime ----------------------------------------------------------------------------


class Runtime:
    def __init__(
        self,
        engines: Iterable[Engine],
        *,
        heartbeat_seconds: float | None = None,
        stop_timeout: float | None = None,
        backoff_initial: float | None = None,
        backoff_max: float | None = None,
    ) -> None:
        self.engines = list(engines)
        names = [engine.name for engine in self.engines]
        if len(set(names)) != len(names):
            raise EngineError(f"Each engine may run once per process; got {names}.")
        for engine in self.engines:
            for event_type in engine.subscribes:
                events.group_name(event_type)  # an unknown type is an error now, not deafness
        self.heartbeat_seconds = float(
            heartbeat_seconds or getattr(settings, "HEARTBEAT_SECONDS", 5)
        )
        self.stop_timeout = float(
            stop_timeout or getattr(settings, "ENGINE_STOP_TIMEOUT_SECONDS", 10)
        )
        self.backoff_initial = float(
            backoff_initial or getattr(settings, "ENGINE_BACKOFF_INITIAL_SECONDS", 0.5)
        )
        self.backoff_max = float(backoff_max or getattr(settings, "ENGINE_BACKOFF_MAX_SECONDS", 30))
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.stopping = asyncio.Event()

    def new_backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max)

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            logger.info("Stopping engines: %s", ", ".join(e.name for e in self.engines))
        self.stopping.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run every engine until request_stop() (or SIGINT / SIGTERM), then stop them."""
        self.layer = get_channel_layer()
        if self.layer is None:
            raise EngineError("CHANNEL_LAYERS is not configured: engines need the Redis layer.")
        self.redis = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10
        )
        self.redis_dep = Dependency(self, "Redis", self.redis.ping)
        self.db_dep = Dependency(self, "PostgreSQL", database_sync_to_async(_ping_database))
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.request_stop)
        # Events published by the engines' sync code (database threads) are handed to this
        # loop instead of blocking those threads (qbsite.events.bind_loop).
        await events.bind_loop()
        runners = [_Runner(self, engine) for engine in self.engines]
        try:
            for runner in runners:
                runner.start()
            logger.info(
                "Engines running (pid %s): %s", self.pid, ", ".join(e.name for e in self.engines)
            )
            await self.stopping.wait()
            await asyncio.gather(*(runner.shutdown() for runner in runners))
        finally:
            for runner in runners:
                runner.cancel_all()
            self.redis_dep.cancel()
            self.db_dep.cancel()
            if handle_signals:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            await events.unbind_loop(self.stop_timeout)
        logger.info("Engines stopped.")

    async def dependency_failed(self, exc: BaseException, where: str) -> bool:
        """Wait out a Redis / PostgreSQL outage if `exc` is one; False if it is not (then the
        caller logs it as the engine's own error: a deadlock is not an outage)."""
        if isinstance(exc, REDIS_ERRORS):
            return await self.redis_dep.failed(exc, where)
        if isinstance(exc, DB_ERRORS):
            return await self.db_dep.failed(exc, where)
        return False


class _Runner:
    """One engine's tasks: setup then receive, loop, heartbeat."""

    def __init__(self, runtime: Runtime, engine: Engine) -> None:
        self.runtime = runtime
        self.engine = engine
        self.channel = f"engine.{engine.name}"
        self.groups = [events.group_name(event_type) for event_type in engine.subscribes]
        self.started_at = dt.datetime.now(dt.UTC)
        self.ready = False
        self.main: asyncio.Task | None = None
        self.heartbeat: asyncio.Task | None = None
        self.children: list[asyncio.Task] = []

    @property
    def log(self) -> logging.Logger:
        return self.engine.log

    def start(self) -> None:
        # The heartbeat (which also joins the groups) starts before setup: events that arrive
        # during a long warm-up wait in the channel, and the monitor sees the engine starting.
        self.heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"{self.channel}.hb")
        self.main = asyncio.create_task(self._main(), name=self.channel)

    async def _main(self) -> None:
        if not await self._setup():
            return
        self.ready = True
        if self.engine.has_loop:
            self.children.append(
                asyncio.create_task(self._loop_supervisor(), name=f"{self.channel}.loop")
            )
        await self._receive_loop()

    async def _setup(self) -> bool:
        backoff = self.runtime.new_backoff()
        while not self.engine.stopping.is_set():
            try:
                await self.engine.setup()
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self.runtime.dependency_failed(exc, f"{self.engine.name}.setup()"):
                    continue
                delay = backoff.next()
                self.log.exception("setup() raised; retrying in %.1f s.", delay)
                await _sleep_unless(self.engine.stopping, delay)
        return False

    async def _receive_loop(self) -> None:
        layer = self.runtime.layer
        while not self.engine.stopping.is_set():
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except RECEIVE_ERRORS as exc:
                if not await self.runtime.redis_dep.failed(exc, f"{self.engine.name} receive"):
                    # Redis answers: a stale connection, or a fault in the layer. Not a spin.
                    await _sleep_unless(self.engine.stopping, self.runtime.backoff_initial)
                continue
            await self._deliver(message)

    async def _deliver(self, message) -> None:
        if not isinstance(message, dict) or message.get("type") != events.EVENT_MESSAGE_TYPE:
            kind = message.get("type") if isinstance(message, dict) else type(message).__name__
            self.log.warning("Ignored a message of type %r on %s.", kind, self.channel)
            return
        envelope = message.get("event") or {}
        try:
            await self.engine.handle(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if await self.runtime.dependency_failed(exc, f"{self.engine.name}.handle()"):
                return
            self.log.exception(
                "handle() raised on a %s event from %s; event dropped, engine goes on.",
                envelope.get("event_type", "?"),
                envelope.get("source", "?"),
            )

    async def _loop_supervisor(self) -> None:
        backoff = self.runtime.new_backoff()
        while not self.engine.stopping.is_set():
            started = time.monotonic()
            try:
                await self.engine.loop()
                if self.engine.stopping.is_set():
                    return
                delay = backoff.next()
                self.log.warning("loop() returned while running; restarting it in %.1f s.", delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self.runtime.dependency_failed(exc, f"{self.engine.name}.loop()"):
                    continue
                if time.monotonic() - started > 60:
                    backoff.reset()  # it ran a good while: a fresh failure, not a crash loop
                delay = backoff.next()
                self.log.exception("loop() raised; restarting it in %.1f s.", delay)
            await _sleep_unless(self.engine.stopping, delay)

    async def _heartbeat_loop(self) -> None:
        period = self.runtime.heartbeat_seconds
        while not self.engine.stopping.is_set():
            try:
                await self._beat(period)
            except asyncio.CancelledError:
                raise
            except RECEIVE_ERRORS as exc:
                # Not waiting for the prober here: the next period simply tries again.
                await self.runtime.redis_dep.report(exc, f"{self.engine.name} heartbeat")
            except Exception:
                self.log.exception("Heartbeat failed; trying again in %.1f s.", period)
            await _sleep_unless(self.engine.stopping, period)

    async def _beat(self, period: float) -> None:
        layer = self.runtime.layer
        for group in self.groups:
            await layer.group_add(group, self.channel)
        try:
            stats = self.engine.stats()
            json.dumps(stats)
        except Exception as exc:
            self.log.exception("stats() failed; heartbeat sent without figures.")
            stats = {"error": f"stats() raised {type(exc).__name__}"}
        now = dt.datetime.now(dt.UTC)
        data = {
            "engine": self.engine.name,
            "pid": self.runtime.pid,
            "host": self.runtime.host,
            "started_at": self.started_at,
            "ready": self.ready,
            "stats": stats,
        }
        await events.apublish(events.EventType.HEARTBEAT, data, source=self.engine.name)
        key = heartbeat_key(self.engine.name)
        async with self.runtime.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "engine": self.engine.name,
                    "pid": str(self.runtime.pid),
                    "host": self.runtime.host,
                    "started_at": self.started_at.isoformat(),
                    "last_seen": now.isoformat(),
                    "ready": "1" if self.ready else "0",
                    "stats": json.dumps(stats, separators=(",", ":")),
                },
            )
            pipe.pexpire(key, max(1000, int(period * 3000)))
            await pipe.execute()

    async def shutdown(self) -> None:
        self.engine.stopping.set()
        timeout = self.runtime.stop_timeout
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        if self.main is not None:
            self.main.cancel()  # setup or the receive: nothing of theirs is pending
        if self.children:
            _, pending = await asyncio.wait(self.children, timeout=timeout)
            if pending:
                self.log.error("loop() did not return within %.0f s of stopping.", timeout)
        try:
            await asyncio.wait_for(self.engine.stop(), timeout=timeout)
        except TimeoutError:
            self.log.error("stop() did not finish within %.0f s; leaving anyway.", timeout)
        except Exception:
            self.log.exception("stop() raised.")

    def cancel_all(self) -> None:
        for task in (self.heartbeat, self.main, *self.children):
            if task is not None and not task.done():
                task.cancel()
