"""The latest quote over HTTP without Django's request path: an async fast path in front of it.

GET /api/v1/quotes/<symbol>/ is the hottest read (issue 3: p99 < 5 ms through the API). Through
Django's ASGI handler it costs ~9 ms in process before any network: every sync middleware runs
through sync_to_async (two thread hops each), then the DRF view runs on a thread. This ASGI
app answers that one request on the event loop instead, with the same rules and the same bytes:

- only the plain case: GET, no query string, a host in ALLOWED_HOSTS, `Authorization: Token`;
- one PostgreSQL round trip (async psycopg, a small pool per event loop): the token's user, its
  groups (the same SQL as qbsite.authentication.RoleTokenAuthentication) and whether the symbol
  is in stocks_metadata; the user must be active and have a role (qbsite.roles.role_of);
- one Redis round trip for the quote (`market:{symbol}`), one for the user's throttle counter
  (qbsite.throttling: same key, same rate, same window);
- the body is QuoteSerializer's data rendered by DRF's JSONRenderer, as the view renders it,
  with the security headers Django's middleware would add.

Anything else, and every refusal (a bad or inactive token, no role, an unknown symbol, no
quote yet, a throttled caller, a database or Redis error), goes to Django unchanged, which gives
the canonical answer. So the fast path holds no error semantics of its own; a refused request
is simply answered by the slow path (a throttled one is counted there again: it is refused
either way). QUOTE_FAST_PATH=false turns it off. Responses from it carry `X-QB-Path: fast`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref

import redis.asyncio
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http.request import split_domain_port, validate_host
from psycopg_pool import AsyncConnectionPool
from rest_framework.renderers import JSONRenderer

from marketdata.buffer import alatest_quote
from marketdata.models import Stock
from marketdata.serializers import QuoteSerializer
from qbsite.authentication import _user_query
from qbsite.db import connection_params
from qbsite.roles import role_of
from qbsite.throttling import UserThrottle, acount, counter_key

logger = logging.getLogger("qb.fastquote")

_PATH = re.compile(r"^/api/v1/quotes/(?P<symbol>[0-9A-Z]{6})/$")
_TOKEN = re.compile(r"^Token ([0-9a-f]{40})$")


def _headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """What the view's response carries after Django's SecurityMiddleware and
    XFrameOptionsMiddleware, from the same settings."""
    headers = [
        (b"content-type", b"application/json"),
        (b"vary", b"Accept"),
        (b"allow", b"GET, HEAD, OPTIONS"),
        (b"x-frame-options", str(getattr(settings, "X_FRAME_OPTIONS", "DENY")).encode()),
    ]
    if getattr(settings, "SECURE_CONTENT_TYPE_NOSNIFF", True):
        headers.append((b"x-content-type-options", b"nosniff"))
    for setting, name in (
        ("SECURE_REFERRER_POLICY", b"referrer-policy"),
        ("SECURE_CROSS_ORIGIN_OPENER_POLICY", b"cross-origin-opener-policy"),
    ):
        value = getattr(settings, setting, None)
        if value:
            value = value if isinstance(value, str) else ",".join(value)
            headers.append((name, value.encode()))
    seconds = getattr(settings, "SECURE_HSTS_SECONDS", 0)
    if secure and seconds:
        value = f"max-age={seconds}"
        if getattr(settings, "SECURE_HSTS_INCLUDE_SUBDOMAINS", False):
            value += "; includeSubDomains"
        if getattr(settings, "SECURE_HSTS_PRELOAD", False):
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    headers.append((b"x-qb-path", b"fast"))
    return headers


def _secure(scope) -> bool:
    """Django's request.is_secure(): the scheme, or the configured proxy header."""
    if scope.get("scheme") == "https":
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, expected = proxy
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        value = _header(scope, header)
        return value is not None and value.decode("latin-1").split(",")[0].strip() == expected
    return False


def enabled() -> bool:
    return bool(getattr(settings, "QUOTE_FAST_PATH", True))


class _LoopResources:
    """A PostgreSQL pool and a Redis client for one event loop (neither may cross loops)."""

    def __init__(self) -> None:
        params = connection_params(application_name="qb-fastquote")
        self.pool = AsyncConnectionPool(
            kwargs={**params, "autocommit": True}, min_size=1, max_size=4, open=False
        )
        self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        self.opened = asyncio.Lock()

    async def connection(self):
        if self.pool.closed:
            async with self.opened:
                if self.pool.closed:
                    await self.pool.open()
        return self.pool.connection(timeout=2)


_resources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_sql: tuple[str, list[str]] | None = None


def _query() -> tuple[str, list[str]]:
    """The token's user and groups (RoleTokenAuthentication's SQL), plus: is the symbol known?"""
    global _sql
    if _sql is None:
        user_sql, names = _user_query(get_user_model())
        stocks = Stock._meta.db_table
        _sql = (
            f"SELECT q.*, EXISTS (SELECT 1 FROM {stocks} WHERE symbol = %s) FROM ({user_sql}) AS q",
            names,
        )
    return _sql


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value
    return None


def _eligible(scope) -> tuple[str, str] | None:
    """(symbol, token) when this request is the plain case the fast path answers."""
    if scope.get("type") != "http" or scope.get("method") != "GET" or scope.get("query_string"):
        return None
    match = _PATH.match(scope.get("path", ""))
    if match is None:
        return None
    authorization = _header(scope, b"authorization")
    token = _TOKEN.match(authorization.decode("latin-1")) if authorization else None
    if token is None:
        return None
    host = (_header(scope, b"host") or b"").decode("latin-1")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    if getattr(settings, "SECURE_SSL_REDIRECT", False) and not _secure(scope):
        return None  # Django redirects it to https
    return match["symbol"], token[1]


async def _answer(symbol: str, key: str) -> bytes | None:
    """The response body, or None to let Django answer."""
    loop = asyncio.get_running_loop()
    resources = _resources.get(loop)
    if resources is None:
        resources = _resources[loop] = _LoopResources()
    sql, names = _query()
    async with await resources.connection() as conn:
        cursor = await conn.execute(sql, [symbol, key])
        row = await cursor.fetchone()
    if row is None or not row[-1]:
        return None  # a bad token, or an unknown symbol
    user = get_user_model()(**dict(zip(names, row[: len(names)], strict=True)))
    user._qb_group_names = set(row[-2])
    if not user.is_active or role_of(user) is None:
        return None
    quote = await alatest_quote(resources.redis, symbol)
    if quote is None:
        return None
    throttle = UserThrottle()
    rate = throttle.get_rate()
    if rate is not None:
        allowed, duration = throttle.parse_rate(rate)
        count, _ttl = await acount(resources.redis, counter_key(throttle.scope, user.pk), duration)
        if count > allowed:
            return None
    return JSONRenderer().render(QuoteSerializer({"symbol": symbol, **quote}).data)


async def close_resources() -> None:
    """Close this event loop's pool and Redis client (tests; a server process just exits)."""
    resources = _resources.pop(asyncio.get_running_loop(), None)
    if resources is not None:
        await resources.pool.close()
        await resources.redis.aclose()


class QuoteFastPath:
    """ASGI middleware: the fast path for the plain quote request, Django for the rest."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        target = _eligible(scope) if enabled() else None
        if target is not None:
            try:
                body = await _answer(*target)
            except Exception:  # the database or Redis away: Django answers (and says why)
                logger.debug("Quote fast path failed; Django answers.", exc_info=True)
                body = None
            if body is not None:
                headers = [
                    *_headers(_secure(scope)),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
