"""WebSocket endpoints shared by every app."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from qbsite.roles import role_of

# Close codes in the 4000-4999 range are ours: 4401 = not authenticated, 4403 = no role.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    """Accepts only users with a role; others are closed with 4401 / 4403 before any data."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.role = await database_sync_to_async(role_of)(user)
        if self.role is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        await self.on_accepted()

    async def on_accepted(self):
        pass


class SessionConsumer(AuthenticatedConsumer):
    """`/ws/session/`: says who you are and answers pings; lets clients check their setup."""

    async def on_accepted(self):
        await self.send_json(
            {"type": "hello", "user": self.scope["user"].get_username(), "role": self.role}
        )

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "id": content.get("id")})
        else:
            await self.send_json(
                {"type": "error", "message": 'Unknown message; send {"type": "ping"}.'}
            )
