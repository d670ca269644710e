"""API throttles, counted in the Redis cache (django-redis, CACHES["default"]).

DRF's stock throttles copy DEFAULT_THROTTLE_RATES into a class attribute at import time,
so a changed setting (a test's override, a reloaded configuration) would be ignored; these
read the rate when the request arrives.
"""

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _LiveRateMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_LiveRateMixin, AnonRateThrottle):
    pass


class UserThrottle(_LiveRateMixin, UserRateThrottle):
    pass
