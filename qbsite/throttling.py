"""API throttles: a fixed-window counter per caller in Redis, one round trip per request.

DRF's stock throttles keep each caller's request history (a list of timestamps) in the
cache, read and rewritten whole on every request: at a few thousand requests a minute that
is a large pickle each way. Here each caller has one counter key, `throttle:<scope>:<ident>`,
that lives for the rate's window: SET NX EX opens the window, INCR counts (one pipeline).
A caller may thus send up to twice the rate across a window boundary, which is acceptable for
abuse protection. The rate is read per request, so a changed setting (a test's override)
applies at once.
"""

from __future__ import annotations

from django_redis import get_redis_connection
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


def counter_key(scope: str, ident) -> str:
    """The counter of one caller: `throttle:<scope>:<ident>` (user pk, or the client's IP)."""
    return f"throttle:{scope}:{ident}"


def _count(pipe, key: str, duration: int):
    pipe.set(key, 0, ex=duration, nx=True)  # opens the window
    pipe.incr(key)
    pipe.ttl(key)
    return pipe


async def acount(client, key: str, duration: int) -> tuple[int, int]:
    """Count one request on `key` from async code (the quote fast path): (count, ttl)."""
    _, count, ttl = await _count(client.pipeline(transaction=False), key, duration).execute()
    return count, ttl


class _CounterMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        # DRF parses the rate in __init__, before a test could change it: parse it again.
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        cache_key = self.get_cache_key(request, view)  # "throttle_<scope>_<ident>"
        if cache_key is None:
            return True
        key = "throttle:" + cache_key.removeprefix("throttle_").replace("_", ":", 1)
        pipe = get_redis_connection("default").pipeline(transaction=False)
        _, count, ttl = _count(pipe, key, self.duration).execute()
        self._retry_after = max(int(ttl), 1)
        return count <= self.num_requests

    def wait(self):
        return getattr(self, "_retry_after", None)


class AnonThrottle(_CounterMixin, AnonRateThrottle):
    pass


class UserThrottle(_CounterMixin, UserRateThrottle):
    pass
