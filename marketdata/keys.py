"""Redis key names: the contract with other tools (DESIGN.md, "Redis keys"). Keep these names.

Every module that touches market data in Redis imports its names from here, and only here.
"""

from __future__ import annotations


def quote_key(symbol: str) -> str:
    """Hash: the latest quote (timestamp, open, high, low, close, volume, change, ...)."""
    return f"market:{symbol}"


def candles_key(symbol: str, interval: str) -> str:
    """List, newest first: JSON candles, at most MAX_CANDLES_PER_SYMBOL."""
    return f"candles:{symbol}:{interval}"


def indicators_key(symbol: str) -> str:
    """Hash: sma_20, rsi, macd, macd_signal, macd_hist, updated_at."""
    return f"indicators:{symbol}"


# Closed candles on their way to PostgreSQL: a Redis Stream read by the archiver's consumer
# group and acknowledged only after the PostgreSQL commit (DESIGN.md, "Data that must not be lost").
CANDLE_STREAM = "stream:candles"
ARCHIVER_GROUP = "archiver"


# Engine liveness, written with the heartbeat event: hash per engine, expiring.
def heartbeat_key(engine: str) -> str:
    return f"heartbeat:{engine}"


def market_stream_group(symbol: str) -> str:
    """Channels group that WebSocket clients of one symbol join: quotes and closed candles.

    Per symbol, so a client watching 005930 is not sent the whole market. (Group names may
    not hold ':', hence the dot.)
    """
    return f"market.{symbol}"
