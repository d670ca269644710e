"""WebSocket routes and worker channels of every app, gathered for qbsite/asgi.py."""

from django.urls import path

from qbsite.consumers import SessionConsumer

websocket_urlpatterns = [
    path("ws/session/", SessionConsumer.as_asgi()),
]

# Engines (issue: market data) register their worker channels here: {"channel-name": Consumer}.
worker_channels: dict = {}
