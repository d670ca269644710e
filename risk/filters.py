from django.db.models import Q
from django.utils import timezone

from qbsite.filters import QBFilterSet, StrictBooleanFilter, time_range_filters
from risk.models import LimitChange, RiskAlert, RiskLock, RiskMetric, TradingStateChange


class RiskMetricFilter(QBFilterSet):
    timestamp_after, timestamp_before = time_range_filters("timestamp", "Snapshots taken")

    class Meta:
        model = RiskMetric
        fields = []


class RiskAlertFilter(QBFilterSet):
    created_after, created_before = time_range_filters("created_at", "Alerts raised")

    class Meta:
        model = RiskAlert
        fields = ["alert_type", "severity", "symbol"]


class LimitChangeFilter(QBFilterSet):
    changed_after, changed_before = time_range_filters("changed_at", "Changes made")

    class Meta:
        model = LimitChange
        fields = ["field"]


class TradingStateChangeFilter(QBFilterSet):
    at_after, at_before = time_range_filters("at", "Changes made")

    class Meta:
        model = TradingStateChange
        fields = ["to_state", "automatic"]


class RiskLockFilter(QBFilterSet):
    active = StrictBooleanFilter(method="filter_active", label="In force now")

    class Meta:
        model = RiskLock
        fields = ["kind", "symbol"]

    def filter_active(self, queryset, name, value):
        now = timezone.now()
        live = Q(removed_at__isnull=True, until__gt=now, created_at__lte=now)
        return queryset.filter(live) if value else queryset.exclude(live)
