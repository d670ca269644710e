"""The Korea Investment & Securities (KIS) Open API: the REST and WebSocket clients that the
KIS broker (trading.brokers.kis), the KIS feed (marketdata.feeds.kis) and `backfill --source
kis` share, and the fake KIS server the tests talk to (kis.testing)."""
