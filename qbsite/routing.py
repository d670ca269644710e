"""WebSocket routes and worker channels of every app, gathered for qbsite/asgi.py."""

from django.urls import path

from marketdata.consumers import MarketConsumer
from qbsite.consumers import SessionConsumer

websocket_urlpatterns = [
    path("ws/session/", SessionConsumer.as_asgi()),
    path("ws/market/<str:symbol>/", MarketConsumer.as_asgi()),
]

# Worker channels served by `runworker` through ChannelNameRouter: {"channel-name": Consumer}.
# The engines do not use it: `manage.py runengines` (qbsite/engines.py) receives on their
# `engine.<name>` channels itself.
worker_channels: dict = {}
