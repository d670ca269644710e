"""kis.token: one token for every process, refreshed before expiry; the approval key."""

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from kis.errors import KISAuthError, KISUnavailable
from kis.token import TokenStore, parse_token_expiry

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: one process of several asking for the token at the same moment.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import httpx, redis.asyncio
    from kis.config import KISConfig
    from kis.token import TokenStore

    spec = json.loads(sys.argv[1])

    async def main():
        config = KISConfig(**spec["config"])
        r = redis.asyncio.Redis.from_url(spec["redis"])
        async with httpx.AsyncClient() as http:
            store = TokenStore(config, redis=r, http=http)
            time.sleep(max(0, spec["at"] - time.time()))
            token = await store.access_token()
        await r.aclose()
        print(token.value)

    asyncio.run(main())
    """
)


def run_workers(config, redis_url: str, count: int) -> list[str]:
    spec = {
        "config": dataclasses.asdict(config),
        "redis": redis_url,
        "at": time.time() + 1.5,  # all start together, after their imports
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
        for _ in range(count)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_processes_asking_at_once_make_one_issuance(fake_kis, kis_config, settings, redis_client):
    fake_kis.state.token_delay = 0.3  # the issuance takes a while: the others must wait
    tokens = run_workers(kis_config, settings.REDIS_URL, 4)

    assert fake_kis.state.token_requests == 1
    assert len(set(tokens)) == 1 and tokens[0].startswith("fake-")
    # A later process takes it from Redis.
    assert run_workers(kis_config, settings.REDIS_URL, 1) == tokens[:1]
    assert fake_kis.state.token_requests == 1


async def test_token_is_cached_with_kis_expiry(fake_kis, kis_config, aredis):
    async with httpx.AsyncClient() as http:
        store = TokenStore(kis_config, redis=aredis, http=http)
        first = await store.access_token()
        again = await TokenStore(kis_config, redis=aredis, http=http).access_token()
    assert again == first
    assert fake_kis.state.token_requests == 1
    issued = fake_kis.state.tokens[0]
    # access_token_token_expired is KST to the second.
    assert abs(first.expires_at.timestamp() - issued.expires_at) < 1
    ttl = await aredis.pttl(kis_config.token_key)
    assert abs(ttl / 1000 - (issued.expires_at - time.time())) < 2
    assert kis_config.app_key not in kis_config.token_key


async def test_the_token_is_refreshed_shortly_before_expiry(fake_kis, kis_config, aredis):
    fake_kis.state.token_lifetime = 10
    fake_kis.state.token_reuse = 0  # KIS would give the same one within 6 h; not here
    config = dataclasses.replace(kis_config, token_refresh_margin=8.5)
    async with httpx.AsyncClient() as http:
        store = TokenStore(config, redis=aredis, http=http)
        first = await store.access_token()
        assert await store.access_token() == first
        assert fake_kis.state.token_issuances == 1
        await asyncio.sleep(1.6)  # now inside the margin
        second = await store.access_token()
    assert second.value != first.value
    assert fake_kis.state.token_issuances == 2


async def test_a_lock_left_by_a_dead_process_lapses(fake_kis, kis_config, aredis):
    await aredis.set(kis_config.token_lock_key, "someone-who-died", px=400)
    async with httpx.AsyncClient() as http:
        started = time.monotonic()
        token = await TokenStore(kis_config, redis=aredis, http=http).access_token()
    assert token.value
    assert time.monotonic() - started >= 0.3
    assert fake_kis.state.token_requests == 1


async def test_invalidate_drops_only_the_refused_token(fake_kis, kis_config, aredis):
    fake_kis.state.token_reuse = 0
    async with httpx.AsyncClient() as http:
        store = TokenStore(kis_config, redis=aredis, http=http)
        first = await store.access_token()
        await store.invalidate("some-other-token")
        assert await aredis.exists(kis_config.token_key)
        await store.invalidate(first.value)
        second = await store.access_token()
    assert second.value != first.value


async def test_approval_key_is_issued_once_and_shared(fake_kis, kis_config, aredis):
    async with httpx.AsyncClient() as http:
        key = await TokenStore(kis_config, redis=aredis, http=http).approval_key()
        again = await TokenStore(kis_config, redis=aredis, http=http).approval_key()
    assert key == again
    assert fake_kis.state.approval_requests == 1
    assert key in fake_kis.state.approval_keys  # issued for `secretkey` (the fake checks it)


async def test_a_wrong_secret_is_an_auth_error_without_the_secret(fake_kis, kis_config, aredis):
    config = dataclasses.replace(kis_config, app_secret="wrong-secret-value-123")
    async with httpx.AsyncClient() as http:
        with pytest.raises(KISAuthError) as refused:
            await TokenStore(config, redis=aredis, http=http).access_token()
    assert refused.value.msg_cd == "EGW00105"
    assert refused.value.http_status == 403
    assert "wrong-secret-value-123" not in str(refused.value)
    assert not await aredis.exists(config.token_key)


async def test_no_server_is_unavailable(kis_config, aredis):
    config = dataclasses.replace(kis_config, rest_url="http://127.0.0.1:9")
    async with httpx.AsyncClient() as http:
        with pytest.raises(KISUnavailable, match="ConnectError"):
            await TokenStore(config, redis=aredis, http=http).access_token()


def test_expiry_from_expires_in_when_kis_sends_no_date():
    expiry = parse_token_expiry({"expires_in": 86400}, now=1_700_000_000)
    assert expiry.timestamp() == 1_700_086_400
    kst = parse_token_expiry({"access_token_token_expired": "2026-11-28 09:00:00"})
    assert kst.isoformat() == "2026-11-28T00:00:00+00:00"
    with pytest.raises(Exception, match="not 'YYYY-MM-DD"):
        parse_token_expiry({"access_token_token_expired": "28/11/2026"})
