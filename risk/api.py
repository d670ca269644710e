"""The risk API.

- risk-metrics, risk-alerts, risk-limit-changes, risk-state-changes: read-only, every role.
- risk/state/: GET the trading state (every role); POST {state, reason} changes it: operators
  only (a trader or client gets 403). Answers the state as it stands, with `changed` false when
  it already was that state.
- risk/limits/: GET the limits (every role); PATCH {<limit>: value, ..., reason}: operators only,
  each changed field audited (risk-limit-changes). A bad value: 400 naming it.
- risk-locks: list (every role; `active=true` for live ones), POST creates (operators; kind
  MANUAL by default), DELETE removes it (operators; the row stays, with removed_at/by).
"""

from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from qbsite.exceptions import NotFound
from qbsite.pagination import KeysetCursorPagination
from qbsite.roles import api_actor
from risk import services
from risk.filters import (
    LimitChangeFilter,
    RiskAlertFilter,
    RiskLockFilter,
    RiskMetricFilter,
    TradingStateChangeFilter,
)
from risk.models import (
    LimitChange,
    RiskAlert,
    RiskLimits,
    RiskLock,
    RiskMetric,
    TradingState,
    TradingStateChange,
)
from risk.serializers import (
    LimitChangeSerializer,
    RiskAlertSerializer,
    RiskLimitsSerializer,
    RiskLimitsUpdateSerializer,
    RiskLockCreateSerializer,
    RiskLockSerializer,
    RiskMetricSerializer,
    TradingStateChangeSerializer,
    TradingStateSerializer,
    TradingStateSetSerializer,
)


class _History(viewsets.ReadOnlyModelViewSet):
    """A read-only history, newest first (filters, cursor pagination)."""

    filter_backends = [DjangoFilterBackend]
    pagination_class = KeysetCursorPagination


class RiskMetricViewSet(_History):
    """Portfolio risk snapshots, newest first (cursor pagination)."""

    queryset = RiskMetric.objects.all()
    serializer_class = RiskMetricSerializer
    filterset_class = RiskMetricFilter
    cursor_ordering = ("-timestamp", "-id")


class RiskAlertViewSet(_History):
    """Risk alerts, newest first."""

    queryset = RiskAlert.objects.all()
    serializer_class = RiskAlertSerializer
    filterset_class = RiskAlertFilter
    cursor_ordering = ("-created_at", "-id")


class LimitChangeViewSet(_History):
    """The audit trail of the risk limits, newest first."""

    queryset = LimitChange.objects.select_related("changed_by")
    serializer_class = LimitChangeSerializer
    filterset_class = LimitChangeFilter
    cursor_ordering = ("-changed_at", "-id")


class TradingStateChangeViewSet(_History):
    """The trading state's history, newest first."""

    queryset = TradingStateChange.objects.all()
    serializer_class = TradingStateChangeSerializer
    filterset_class = TradingStateChangeFilter
    cursor_ordering = ("-at", "-id")


class TradingStateView(APIView):
    """The trading state: ACTIVE, REDUCING (only orders that reduce a position) or HALTED."""

    def _current(self) -> TradingState:
        return TradingState.objects.filter(pk=1).first() or TradingState()

    @extend_schema(responses=TradingStateSerializer)
    def get(self, request):
        return Response(TradingStateSerializer(self._current()).data)

    @extend_schema(request=TradingStateSetSerializer, responses=TradingStateSerializer)
    def post(self, request):
        serializer = TradingStateSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changed = services.trading_state_set(
            state=serializer.validated_data["state"],
            reason=serializer.validated_data["reason"],
            actor=api_actor(request.user),
        )
        return Response({**TradingStateSerializer(self._current()).data, "changed": changed})


class RiskLimitsView(APIView):
    """The risk limits in force; PATCH changes some (operators), each change audited."""

    @extend_schema(responses=RiskLimitsSerializer)
    def get(self, request):
        return Response(RiskLimitsSerializer(services.limits_get()).data)

    @extend_schema(request=RiskLimitsSerializer, responses=RiskLimitsSerializer)
    def patch(self, request):
        serializer = RiskLimitsUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = services.limits_update(
            user=request.user,
            actor=api_actor(request.user),
            reason=serializer.validated_data["reason"],
            **serializer.validated_data["changes"],
        )
        limits = RiskLimits.objects.get(pk=1)
        return Response(
            {
                **RiskLimitsSerializer(limits).data,
                "changes": LimitChangeSerializer(changes, many=True).data,
            }
        )


class RiskLockViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Risk locks, newest first. Create and remove: operators."""

    queryset = RiskLock.objects.select_related("strategy")
    serializer_class = RiskLockSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = RiskLockFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-created_at", "-id")

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}

    @extend_schema(request=RiskLockCreateSerializer, responses=RiskLockSerializer)
    def create(self, request, *args, **kwargs):
        serializer = RiskLockCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        strategy = None
        if data.get("strategy"):
            from trading.models import Strategy

            strategy = Strategy.objects.filter(name=data["strategy"]).first()
            if strategy is None:
                raise NotFound(f"No strategy named {data['strategy']!r}.")
        lock = services.lock_create(
            kind=data["kind"],
            until=data["until"],
            reason=data["reason"],
            actor=api_actor(request.user),
            symbol=data.get("symbol"),
            strategy=strategy,
        )
        body = RiskLockSerializer(lock, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        lock = self.get_object()
        lock = services.lock_remove(lock_id=lock.pk, actor=api_actor(request.user))
        return Response(RiskLockSerializer(lock, context=self.get_serializer_context()).data)
