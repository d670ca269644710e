"""The KIS per-account request limit, shared by every process through Redis.

    limiter = RateLimiter(redis, key=config.limiter_key, limit=config.rate_per_second)
    await limiter.acquire()     # waits until a request may go out

A sliding window kept in one Redis sorted set per account: a Lua script (atomic on the Redis
server, and timed by the server's own clock, so processes on several machines agree) drops the
entries older than the window, admits the request if fewer than `limit` remain, and otherwise
says how long to wait until the oldest leaves. So at most `limit` requests start in any window,
whatever the number of processes. The window is kis.config.RATE_WINDOW_SECONDS (a little over
a second: KIS counts a request when it arrives, a few milliseconds after we admit it).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time

from kis import config as kc
from kis.errors import KISRateLimited

# KEYS[1]: the set; ARGV: limit, window (microseconds), a unique member.
# Returns 0 when admitted, else microseconds until a place frees.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return wait
"""


class RateLimiter:
    """At most `limit` acquisitions per `window` seconds per key, across processes."""

    def __init__(
        self, redis, *, key: str, limit: int, window: float = kc.RATE_WINDOW_SECONDS
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        if window <= 0:
            raise ValueError(f"window must be > 0, not {window}")
        self.redis = redis
        self.key = key
        self.limit = limit
        self.window = window
        self._script = redis.register_script(_ACQUIRE_LUA)

    async def try_acquire(self) -> float:
        """0.0 when admitted, else the seconds to wait before trying again."""
        wait = await self._script(
            keys=[self.key],
            args=[self.limit, int(self.window * 1_000_000), secrets.token_hex(8)],
        )
        return int(wait) / 1_000_000

    async def acquire(self, *, timeout: float | None = None) -> None:
        """Wait for a place. KISRateLimited if none comes within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = await self.try_acquire()
            if wait == 0:
                return
            # A little jitter: waiters woken together do not all hit Redis at the same instant.
            wait += random.uniform(0, 0.005)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise KISRateLimited(
                    f"No KIS request slot within {timeout} s ({self.limit} per {self.window} s)."
                )
            await asyncio.sleep(wait)
