"""One ASGI application: HTTP, authenticated WebSockets, and the engines' worker channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from marketdata.fastquote import QuoteFastPath  # noqa: E402
from qbsite.routing import websocket_urlpatterns, worker_channels  # noqa: E402
from qbsite.ws_auth import TokenAuthMiddleware  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The latest quote's plain case on the event loop; everything else to Django.
        "http": QuoteFastPath(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
        "channel": ChannelNameRouter(worker_channels),
    }
)
