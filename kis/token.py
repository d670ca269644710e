"""The KIS access token and WebSocket approval key, issued once and shared through Redis.

KIS notifies the account holder of every token it issues and limits how often it issues
them, so every QB process uses the same token until shortly before it expires:

    store = TokenStore(config, redis=redis_async_client, http=httpx_async_client)
    token = await store.access_token()      # AccessToken(value, expires_at), cached or issued
    await store.invalidate(token.value)     # KIS said it is expired / invalid: issue anew
    key = await store.approval_key()        # for the WebSocket (POST /oauth2/Approval)

The cache is one Redis key per environment and app key (kis.config.token_key: a hash of the
app key, never the key) holding {"value", "expires_at"} with a TTL to its expiry. When it is
missing or within `config.token_refresh_margin` seconds of expiring, one process takes a lock
(SET NX PX with a random owner; released only by its owner, by a compare-and-delete script),
reads the cache again, issues, and stores; the others wait on the cache. So two processes
asking at once make one issuance. Issuance errors are KISError (kis.errors); messages never
hold the key, the secret or the token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

import httpx

from kis import config as kc
from kis.errors import KISAuthError, KISError, KISRateLimited, KISUnavailable

logger = logging.getLogger("kis.token")

KST = dt.timezone(dt.timedelta(hours=9))

# Deletes the lock only if this process still owns it (it may have expired and been retaken).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Deletes the cached token only if it is still the one KIS refused (another process may have
# replaced it already).
_INVALIDATE_LUA = """
local cached = redis.call('GET', KEYS[1])
if cached and cjson.decode(cached)['value'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: dt.datetime  # aware, UTC

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at.timestamp() - (time.time() if now is None else now)


def parse_token_expiry(answer: dict, *, now: float | None = None) -> dt.datetime:
    """The expiry in a tokenP answer: `access_token_token_expired` (KST), else `expires_in`."""
    text = str(answer.get("access_token_token_expired") or "").strip()
    if text:
        try:
            local = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise KISError(
                f"KIS token answer: access_token_token_expired {text!r} is not"
                " 'YYYY-MM-DD HH:MM:SS'."
            ) from None
        return local.replace(tzinfo=KST).astimezone(dt.UTC)
    seconds = answer.get("expires_in")
    try:
        seconds = int(seconds)
    except (TypeError, ValueError):
        raise KISError("KIS token answer has no expiry (expires_in).") from None
    return dt.datetime.fromtimestamp((time.time() if now is None else now) + seconds, dt.UTC)


class TokenStore:
    """Access token and approval key for one KISConfig, cached in Redis (see the module doc).

    redis: a redis.asyncio.Redis; http: an httpx.AsyncClient (the caller closes both).
    """

    def __init__(
        self,
        config: kc.KISConfig,
        *,
        redis,
        http: httpx.AsyncClient,
        lock_seconds: float = kc.TOKEN_LOCK_SECONDS,
        poll_seconds: float = 0.05,
    ):
        self.config = config
        self.redis = redis
        self.http = http
        self.lock_seconds = lock_seconds
        self.poll_seconds = poll_seconds
        self._release = redis.register_script(_RELEASE_LUA)
        self._invalidate = redis.register_script(_INVALIDATE_LUA)
        self._local: AccessToken | None = None  # saves a Redis round trip per request

    # --- access token ---------------------------------------------------------------------

    async def access_token(self) -> AccessToken:
        """A token valid for more than the refresh margin: this process's copy, the Redis
        cache, or a new one from KIS (one issuance across all processes)."""
        margin = self.config.token_refresh_margin
        local = self._local
        if local is not None and local.seconds_left() > margin:
            return local
        cached = await self._shared(
            self.config.token_key,
            self.config.token_lock_key,
            lambda entry: entry["expires_at"] - time.time() > margin,
            self._issue_token,
        )
        token = AccessToken(
            value=cached["value"],
            expires_at=dt.datetime.fromtimestamp(cached["expires_at"], dt.UTC),
        )
        self._local = token
        return token

    async def invalidate(self, value: str) -> None:
        """Forget `value` (KIS refused it): the next access_token() issues a new one, unless
        another process already did."""
        if self._local is not None and self._local.value == value:
            self._local = None
        await self._invalidate(keys=[self.config.token_key], args=[value])

    async def cached_token(self) -> AccessToken | None:
        """The token in Redis, whatever its age (None: none); never asks KIS."""
        raw = await self.redis.get(self.config.token_key)
        if raw is None:
            return None
        entry = json.loads(raw)
        return AccessToken(
            value=entry["value"],
            expires_at=dt.datetime.fromtimestamp(entry["expires_at"], dt.UTC),
        )

    async def _issue_token(self) -> dict:
        answer = await self._post(
            kc.PATH_TOKEN,
            {
                "grant_type": "client_credentials",
                "appkey": self.config.app_key,
                "appsecret": self.config.app_secret,
            },
        )
        value = answer.get("access_token")
        if not value:
            raise KISError("KIS token answer has no access_token.", path=kc.PATH_TOKEN)
        expires_at = parse_token_expiry(answer)
        logger.info(
            "KIS access token issued (%s, app %s), expires %s",
            self.config.env,
            kc.app_key_id(self.config.app_key),
            expires_at.astimezone(KST).isoformat(),
        )
        return {"value": value, "expires_at": expires_at.timestamp()}

    # --- approval key ---------------------------------------------------------------------

    async def approval_key(self) -> str:
        """The WebSocket approval key, cached like the token (kis.config.APPROVAL_KEY_TTL)."""
        entry = await self._shared(
            self.config.approval_key_key,
            self.config.approval_lock_key,
            lambda entry: entry["expires_at"] - time.time() > 60,
            self._issue_approval_key,
        )
        return entry["value"]

    async def _issue_approval_key(self) -> dict:
        answer = await self._post(
            kc.PATH_APPROVAL,
            {
                "grant_type": "client_credentials",
                "appkey": self.config.app_key,
                "secretkey": self.config.app_secret,  # sic: `secretkey` here
            },
        )
        value = answer.get("approval_key")
        if not value:
            raise KISError("KIS approval answer has no approval_key.", path=kc.PATH_APPROVAL)
        logger.info("KIS WebSocket approval key issued (%s)", self.config.env)
        return {"value": value, "expires_at": time.time() + kc.APPROVAL_KEY_TTL_SECONDS}

    # --- the shared cache -------------------------------------------------------------------

    async def _read(self, key: str, fresh) -> dict | None:
        raw = await self.redis.get(key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        return entry if fresh(entry) else None

    async def _shared(self, key: str, lock_key: str, fresh, issue) -> dict:
        deadline = time.monotonic() + self.lock_seconds + 5
        while True:
            entry = await self._read(key, fresh)
            if entry is not None:
                return entry
            owner = secrets.token_hex(16)
            if await self.redis.set(lock_key, owner, nx=True, px=int(self.lock_seconds * 1000)):
                try:
                    # Another process may have stored one between our read and the lock.
                    entry = await self._read(key, fresh)
                    if entry is not None:
                        return entry
                    entry = await issue()
                    ttl_ms = int((entry["expires_at"] - time.time()) * 1000)
                    if ttl_ms > 0:
                        await self.redis.set(key, json.dumps(entry), px=ttl_ms)
                    return entry
                finally:
                    await self._release(keys=[lock_key], args=[owner])
            # Another process is issuing: wait for its result (or for its lock to lapse).
            while await self.redis.exists(lock_key):
                entry = await self._read(key, fresh)
                if entry is not None:
                    return entry
                if time.monotonic() > deadline:
                    raise KISUnavailable(
                        "Waited too long for another process to get a KIS token"
                        f" ({lock_key} still held)."
                    )
                await asyncio.sleep(self.poll_seconds)

    async def _post(self, path: str, payload: dict) -> dict:
        try:
            response = await self.http.post(
                self.config.rest_url + path,
                json=payload,
                headers={"content-type": "application/json; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            raise KISUnavailable(
                f"KIS {path}: {type(exc).__name__} (no answer).", path=path
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict):
            return answer
        answer = answer if isinstance(answer, dict) else {}
        msg_cd = str(answer.get("error_code") or answer.get("msg_cd") or "")
        msg1 = str(answer.get("error_description") or answer.get("msg1") or "").strip()
        if msg_cd == kc.MSG_RATE_LIMITED:
            kind = KISRateLimited
        elif response.status_code >= 500 and not msg_cd:
            kind = KISUnavailable
        else:
            kind = KISAuthError
        raise kind(
            f"KIS refused {path}: {msg_cd or 'no code'} {msg1 or '(no message)'}"
            f" [HTTP {response.status_code}]",
            msg_cd=msg_cd,
            msg1=msg1,
            http_status=response.status_code,
            path=path,
        )
