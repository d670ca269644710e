import django_filters

from ops.models import LogLevel, SystemLog
from qbsite.filters import QBFilterSet, time_range_filters


class SystemLogFilter(QBFilterSet):
    level = django_filters.ChoiceFilter(choices=LogLevel.choices)
    component = django_filters.CharFilter(
        lookup_expr="startswith", help_text="Logger name prefix, e.g. qb.collector."
    )
    timestamp_after, timestamp_before = time_range_filters("timestamp", "Records logged")

    class Meta:
        model = SystemLog
        fields = ["level", "component"]
