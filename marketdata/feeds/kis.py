"""The KIS WebSocket feed: the seam only. Its client comes with the KIS issue (6)."""

from __future__ import annotations

from marketdata.feeds.base import Feed


class KISWebSocketFeed(Feed):
    name = "kis"

    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            "The KIS WebSocket feed is not built yet: its client comes with the KIS issue (6). "
            "Use COLLECTOR_FEED=simulated or csv:<path> until then."
        )

    @property
    def symbols(self) -> list[str]:  # pragma: no cover - cannot be constructed yet
        raise NotImplementedError

    def now(self):  # pragma: no cover
        raise NotImplementedError

    def batches(self):  # pragma: no cover
        raise NotImplementedError
