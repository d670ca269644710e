"""The contract every engine implements; the runtime that drives it lives in qbsite/engines.py.

An engine is one long-lived object per process. The runtime:
- gives it a Channels worker channel `engine.<name>` on the Redis channel layer and adds that
  channel to the group `events.<type>` of every type in `subscribes` (so several processes
  running the same engine share its events: competing consumers on one channel name);
- awaits `setup()` first (warm-up and recovery: crash-only, start-up and recovery are one path);
- delivers every event envelope of those groups to `handle()`;
- runs `loop()` as a task when the engine has one (a feed, a stream reader, a clock);
- publishes a `heartbeat` event with `stats()` every few seconds;
- on SIGINT / SIGTERM sets `stopping` and awaits `stop()`.

Handlers and loops catch and log their own errors (an escaped exception would drop the worker's
backlog); the runtime still guards each call and logs what escapes. The work itself lives in
plain functions (services) that a test can call once without the runtime.
"""

from __future__ import annotations

import asyncio
import logging


class Engine:
    name: str = ""
    subscribes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.log = logging.getLogger(f"qb.engine.{self.name}")

    async def setup(self) -> None:
        """Warm up / recover state (from Redis and PostgreSQL). Called once before anything else."""

    async def handle(self, envelope: dict) -> None:
        """One event of a subscribed group: the envelope built by qbsite.events."""

    async def loop(self) -> None:
        """The engine's own long-running work, if any. Return when `self.stopping` is set."""

    def stats(self) -> dict:
        """Figures for the heartbeat (counters, lag, ...). JSON types only."""
        return {}

    async def stop(self) -> None:
        """Flush and release resources; called once on shutdown after `stopping` is set."""

    has_loop = False  # set True in engines that implement loop()
