"""System logs, for operators only (they can hold internal detail)."""

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets

from ops.filters import SystemLogFilter
from ops.models import SystemLog
from ops.serializers import SystemLogSerializer
from qbsite.pagination import KeysetCursorPagination
from qbsite.roles import Role


class SystemLogViewSet(viewsets.ReadOnlyModelViewSet):
    """Log records from engines and commands, newest first (cursor pagination)."""

    queryset = SystemLog.objects.all()
    serializer_class = SystemLogSerializer
    read_roles = frozenset({Role.OPERATOR})
    filter_backends = [DjangoFilterBackend]
    filterset_class = SystemLogFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-timestamp", "-id")
