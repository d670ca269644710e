"""Brokers: the interface (base.py) and its implementations, by name.

`get_broker(name=None)` gives settings.TRADING_BROKER's broker (or the one named). A new broker
(KIS) is one line in BROKERS. Brokers are cheap to make and read their settings when made, so
each call gives a fresh one.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from .base import Broker, BrokerAck, BrokerError, BrokerFill

BROKERS = {
    "paper": "trading.brokers.paper.PaperBroker",
    "kis": "trading.brokers.kis.KISBroker",
}


def get_broker(name: str | None = None) -> Broker:
    name = name or getattr(settings, "TRADING_BROKER", "paper")
    try:
        path = BROKERS[name]
    except KeyError:
        raise BrokerError(
            f"Unknown broker {name!r}; known brokers: {', '.join(sorted(BROKERS))}.",
            code="broker_unknown",
        ) from None
    return import_string(path)()


__all__ = ["BROKERS", "Broker", "BrokerAck", "BrokerError", "BrokerFill", "get_broker"]
