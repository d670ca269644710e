"""Market data feeds: where ticks come from (simulated KRX, CSV replay, KIS WebSocket).

`make_feed(spec)` builds the feed that settings.COLLECTOR_FEED names: "simulated",
"csv:<path>" or "kis".
"""

from __future__ import annotations

from marketdata.feeds.base import Feed, FeedError, parse_speed

__all__ = ["Feed", "FeedError", "make_feed", "parse_speed"]


def make_feed(spec: str, *, symbols=None, **options) -> Feed:
    """The feed for a COLLECTOR_FEED value. `symbols` ({symbol: prev close or None}) seeds the
    simulated feed; `options` go to the feed's constructor (seed, speed, ...)."""
    spec = (spec or "").strip()
    if spec == "simulated":
        from marketdata.feeds.simulated import SimulatedKRXFeed

        return SimulatedKRXFeed(symbols or {}, **options)
    if spec.startswith("csv:") and spec[4:]:
        from marketdata.feeds.csv_replay import CSVReplayFeed

        options.pop("seed", None)
        return CSVReplayFeed(spec[4:], **options)
    if spec == "kis":
        from marketdata.feeds.kis import KISWebSocketFeed

        options.pop("seed", None)
        return KISWebSocketFeed(list(symbols) if symbols else None, **options)
    raise FeedError(f"COLLECTOR_FEED={spec!r} is not one of: simulated, csv:<path>, kis.")
