"""WebSocket authentication by API token, for programs that have no session cookie.

The token comes from the `Authorization: Token <key>` header or the `token` query parameter.
A session (browser) user already set by AuthMiddlewareStack is kept.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    try:
        return Token.objects.select_related("user").get(key=key).user
    except Token.DoesNotExist:
        return None


def _token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, key = value.decode("latin-1").partition(" ")
            if kind.lower() == "token" and key:
                return key.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("token") or [None])[0]


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        key = _token_from_scope(scope)
        if key:
            user = await _user_for_token(key)
            if user is not None and user.is_active:
                scope["user"] = user
        return await super().__call__(scope, receive, send)
