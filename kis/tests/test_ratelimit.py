"""kis.ratelimit: the per-account limit holds across processes, measured at the fake server."""

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis.asyncio

from kis.client import KISClient
from kis.errors import KISRateLimited
from kis.ratelimit import RateLimiter

ROOT = Path(__file__).resolve().parents[2]

# One process of several: `tasks` concurrent callers each make `calls` quote requests.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis.asyncio
    from kis.client import KISClient
    from kis.config import KISConfig

    spec = json.loads(sys.argv[1])

    async def caller(kis):
        for _ in range(spec["calls"]):
            await kis.current_price("005930")

    async def main():
        r = redis.asyncio.Redis.from_url(spec["redis"])
        async with KISClient(KISConfig(**spec["config"]), redis=r) as kis:
            await kis.tokens.access_token()
            time.sleep(max(0, spec["at"] - time.time()))
            await asyncio.gather(*(caller(kis) for _ in range(spec["tasks"])))
        await r.aclose()

    asyncio.run(main())
    """
)


async def test_the_window_admits_limit_then_says_how_long_to_wait(aredis):
    limiter = RateLimiter(aredis, key="kis:ratelimit:test:1", limit=5, window=1.0)
    assert [await limiter.try_acquire() for _ in range(5)] == [0.0] * 5
    wait = await limiter.try_acquire()
    assert 0.9 < wait <= 1.0
    with pytest.raises(KISRateLimited, match="No KIS request slot"):
        await limiter.acquire(timeout=0.2)
    await asyncio.sleep(wait)
    assert await limiter.try_acquire() == 0.0


def test_bad_limits_are_refused(redis_client):
    with pytest.raises(ValueError, match="limit"):
        RateLimiter(redis.asyncio.Redis(), key="k", limit=0)


def test_processes_together_never_exceed_the_limit(fake_kis, kis_config, settings, redis_client):
    limit = 18
    fake_kis.state.rate_limit = limit  # the fake refuses with EGW00201 beyond it, as KIS does
    spec = {
        "config": dataclasses.asdict(dataclasses.replace(kis_config, rate_per_second=limit)),
        "redis": settings.REDIS_URL,
        "at": time.time() + 2.0,
        "tasks": 6,
        "calls": 4,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]

    answered = [r for r in fake_kis.state.requests if r["path"].startswith("/uapi")]
    peak = fake_kis.state.max_per_window(1.0)
    print(f"\n3 processes x 6 callers, {len(answered)} requests: at most {peak} in any 1 s")
    assert len(answered) == 3 * 6 * 4
    assert peak <= limit
    assert fake_kis.state.rate_limited == 0
    assert peak >= limit - 3  # the callers did press on the limit (else this proves nothing)


def test_threads_of_a_virtual_account_get_one_a_second(
    fake_kis, kis_config, settings, redis_client
):
    config = dataclasses.replace(kis_config, env="virtual", rate_per_second=0)
    assert config.rate_per_second == 1
    fake_kis.state.rate_limit = 1

    def worker():
        async def run():
            r = redis.asyncio.Redis.from_url(settings.REDIS_URL)
            async with KISClient(config, redis=r) as kis:
                for _ in range(2):
                    await kis.current_price("005930")
            await r.aclose()

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    peak = fake_kis.state.max_per_window(1.0)
    print(f"\n2 threads, virtual account: at most {peak} in any 1 s")
    assert len([r for r in fake_kis.state.requests if r["path"].startswith("/uapi")]) == 4
    assert peak == 1 and fake_kis.state.rate_limited == 0
