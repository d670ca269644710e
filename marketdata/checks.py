"""Start-up checks of the market-data settings (run by `manage.py check`, runserver and
runengines): a bad value stops start-up with a message naming the setting."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register()
def market_data_settings(app_configs=None, **kwargs):
    from marketdata.aggregation import AggregationError, check_intervals
    from marketdata.feeds.base import FeedError, parse_speed

    errors = []
    try:
        intervals = check_intervals(settings.CANDLE_INTERVALS)
    except AggregationError as exc:
        errors.append(checks.Error(str(exc), id="marketdata.E001"))
        intervals = ()
    if intervals and settings.INDICATOR_INTERVAL not in intervals:
        errors.append(
            checks.Error(
                f"INDICATOR_INTERVAL={settings.INDICATOR_INTERVAL!r} is not one of"
                f" CANDLE_INTERVALS ({', '.join(intervals)}): no candles would feed it.",
                id="marketdata.E002",
            )
        )
    feed = settings.COLLECTOR_FEED
    if feed not in ("simulated", "kis") and not (feed.startswith("csv:") and feed[4:].strip()):
        errors.append(
            checks.Error(
                f"COLLECTOR_FEED={feed!r} is not one of: simulated, csv:<path>, kis.",
                id="marketdata.E003",
            )
        )
    try:
        parse_speed(settings.COLLECTOR_SPEED)
    except FeedError as exc:
        errors.append(checks.Error(f"COLLECTOR_SPEED: {exc}", id="marketdata.E004"))
    return errors
