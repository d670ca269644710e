"""ArchiverEngine: the candle stream into market_data (the work is marketdata.archiver).

Each round (read, upsert, commit, acknowledge) runs in a worker thread with the archiver's own
Redis client and psycopg connection: the event loop shared with the other engines never waits
on PostgreSQL, and Django's thread-bound connection is not involved. Rounds run one at a time;
while a backlog drains, a round also reads the next batch ahead and acknowledges the previous
one in the archiver's own worker threads (marketdata.archiver).
Several processes may run this engine: they share the consumer group, each under its own
consumer name (host-pid), and the stream's entries are split between them.
"""

from __future__ import annotations

import asyncio
import contextlib

from marketdata.archiver import Archiver
from qbsite.engine_base import Engine


class ArchiverEngine(Engine):
    name = "archiver"
    subscribes = ()
    has_loop = True

    def __init__(self, **archiver_options) -> None:
        super().__init__()
        self._options = archiver_options
        self.archiver: Archiver | None = None

    async def setup(self) -> None:
        # Nothing to warm up: the stream and its pending entries are the state, and the first
        # round reads this consumer's pending entries and claims those of dead consumers.
        self.archiver = Archiver(**self._options)

    async def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                outcome = await asyncio.to_thread(self.archiver.run_once)
            except Exception:
                # run_once returns outages as outcomes; anything else is a bug: log, go on.
                self.log.exception("Archiver round failed")
                delay = 1.0
            else:
                delay = outcome.retry_after
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)

    def stats(self) -> dict:
        return self.archiver.stats() if self.archiver else {}

    async def stop(self) -> None:
        if self.archiver is not None:
            await asyncio.to_thread(self.archiver.close)
