"""Risk snapshots, read-only for every role (the risk engine writes them)."""

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets

from qbsite.pagination import KeysetCursorPagination
from risk.filters import RiskMetricFilter
from risk.models import RiskMetric
from risk.serializers import RiskMetricSerializer


class RiskMetricViewSet(viewsets.ReadOnlyModelViewSet):
    """Portfolio risk snapshots, newest first (cursor pagination)."""

    queryset = RiskMetric.objects.all()
    serializer_class = RiskMetricSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = RiskMetricFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-timestamp", "-id")
