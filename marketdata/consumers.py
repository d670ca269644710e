"""`/ws/market/<symbol>/`: a snapshot, then the symbol's quotes and closed candles as they come.

Messages to the client (JSON):
- {"type": "snapshot", "symbol", "interval", "quote": {...} | null, "candles": [newest first]}
  once, right after the connection is accepted: the latest quote and the last
  MARKET_WS_SNAPSHOT_CANDLES (50) closed candles of `?interval=` (default 1m);
- {"type": "update", "kind": "quote" | "candle", "data": {...}} for each message the collector
  group_sends to market_stream_group(symbol).

Close codes: 4401 anonymous, 4403 no role (AuthenticatedConsumer), 4404 unknown symbol, 4400
bad interval. The consumer joins the group *before* reading the snapshot: an update published
meanwhile is queued and sent after the snapshot (a repeat at worst, never a gap).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from rest_framework.utils.encoders import JSONEncoder

from marketdata.keys import market_stream_group
from marketdata.models import Interval
from marketdata.selectors import candles_recent_closed, quote_latest, symbol_exists
from marketdata.serializers import CandleSeriesSerializer, QuoteSerializer
from qbsite.consumers import AuthenticatedConsumer
from qbsite.exceptions import NotFound

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404


def _snapshot(symbol: str, interval: str) -> dict:
    try:
        quote = QuoteSerializer(quote_latest(symbol=symbol)).data
    except NotFound:
        quote = None
    count = getattr(settings, "MARKET_WS_SNAPSHOT_CANDLES", 50)
    candles = candles_recent_closed(symbol=symbol, interval=interval, count=count)
    return {
        "type": "snapshot",
        "symbol": symbol,
        "interval": interval,
        "quote": quote,
        "candles": CandleSeriesSerializer(candles, many=True).data,
    }


class MarketConsumer(AuthenticatedConsumer):
    group: str | None = None

    async def on_accepted(self):
        self.symbol = self.scope["url_route"]["kwargs"]["symbol"]
        interval = _query_param(self.scope, "interval") or "1m"
        if interval not in Interval.values:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        if not await database_sync_to_async(symbol_exists)(self.symbol):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = market_stream_group(self.symbol)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json(await database_sync_to_async(_snapshot)(self.symbol, interval))

    async def market_update(self, message):
        await self.send_json({"type": "update", "kind": message["kind"], "data": message["data"]})

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        pass  # a read-only stream: nothing to answer

    @classmethod
    async def encode_json(cls, content):
        # DRF's encoder: Decimal, datetime and the serializers' ReturnDicts as they are in the API.
        return json.dumps(content, cls=JSONEncoder, separators=(",", ":"))


def _query_param(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None
