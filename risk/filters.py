from qbsite.filters import QBFilterSet, time_range_filters
from risk.models import RiskMetric


class RiskMetricFilter(QBFilterSet):
    timestamp_after, timestamp_before = time_range_filters("timestamp", "Snapshots taken")

    class Meta:
        model = RiskMetric
        fields = []
