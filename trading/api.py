"""The trading API: orders (placed and canceled through trading.oms), and the ledger
(trades, positions, strategy performance, accounts), which is read-only: services write it.

Orders, who may do what (qbsite.permissions conventions):
- read (list, detail): every role. roles.py says a trader "reads everything trading", and the
  fills of every order are already public to the roles in /trades/; `mine=true` narrows a list
  to one's own API orders.
- place: operators and traders. The placing user is recorded on the order (`user`).
- cancel: an operator any order; a trader only the orders it placed itself (owner_field
  "user"): not another trader's, not a strategy's (403). Clients and strangers: 403.

Placing is idempotent on client_order_id, scoped to the user who placed it: the same request
again returns the same order, as it stands now, with 200 instead of 201; the same id with other
terms is a 409 saying what differs; an id another user already used is a 409 too (without
telling what that order is). A DENIED order (the pre-trade checks said no) is still a created
order: 201 with status DENIED, its reason_code and a sentence in `reason`. It exists: it has an
id, a history and a row in the list, and sending the same request again returns it with 200.
A 4xx would tell the client nothing was created, which is false, and a retry with the same key
would be answered with a resource the client was told does not exist. The same holds for an
order the broker REJECTED.
"""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from qbsite.exceptions import Conflict
from qbsite.filters import StableOrderingFilter
from qbsite.pagination import KeysetCursorPagination
from qbsite.permissions import ALL_ROLES
from qbsite.roles import Role, api_actor
from trading import oms, selectors
from trading.filters import OrderFilter, PositionFilter, StrategyPerformanceFilter, TradeFilter
from trading.models import Position, StrategyPerformance, Trade
from trading.serializers import (
    AccountSerializer,
    OrderCancelSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderSerializer,
    PositionSerializer,
    StrategyPerformanceSerializer,
    TradeSerializer,
)


class TradeViewSet(viewsets.ReadOnlyModelViewSet):
    """Executions, newest first (cursor pagination on timestamp, then id)."""

    queryset = Trade.objects.all()
    serializer_class = TradeSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = TradeFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-timestamp", "-id")


class PositionViewSet(viewsets.ReadOnlyModelViewSet):
    """Holdings, one per symbol (`open=true` for those with shares)."""

    queryset = Position.objects.all()
    serializer_class = PositionSerializer
    filter_backends = [DjangoFilterBackend, StableOrderingFilter]
    filterset_class = PositionFilter
    ordering_fields = ["symbol", "quantity", "unrealized_pnl", "realized_pnl", "updated_at"]
    ordering = ["symbol"]
    lookup_field = "symbol"
    lookup_value_regex = "[0-9A-Z]{6}"


class StrategyPerformanceViewSet(viewsets.ReadOnlyModelViewSet):
    """Each strategy's daily results, newest day first."""

    queryset = StrategyPerformance.objects.all()
    serializer_class = StrategyPerformanceSerializer
    filter_backends = [DjangoFilterBackend, StableOrderingFilter]
    filterset_class = StrategyPerformanceFilter
    ordering_fields = ["date", "strategy", "total_return", "sharpe_ratio"]
    ordering = ["-date", "strategy"]


# --- orders ----------------------------------------------------------------------------------


def _key_taken(client_order_id: str) -> Conflict:
    return Conflict(
        f"client_order_id {client_order_id!r} is already used by another client's order;"
        " choose another id.",
        code="idempotency_conflict",
    )


_ORDER_ERRORS = {
    400: OpenApiResponse(description="A field is missing or wrong; the body names it."),
    409: OpenApiResponse(
        description="The client_order_id is already used with other terms, or by someone else."
    ),
}


@extend_schema_view(
    list=extend_schema(
        summary="Orders, newest first (cursor pagination)",
        description="Filter by status (repeatable), open, symbol, side, order_type, strategy,"
        " client_order_id, mine, and created_after (inclusive) / created_before (exclusive).",
    ),
    retrieve=extend_schema(summary="One order with its transitions and fills"),
    create=extend_schema(
        summary="Place an order (operators, traders); idempotent on client_order_id",
        description="201: created, whatever its status: a DENIED order (pre-trade checks) or"
        " a REJECTED one (broker) is created too and says why in reason_code and reason."
        " 200: the same request was made before; the order as it stands now.",
        request=OrderCreateSerializer,
        responses={201: OrderDetailSerializer, 200: OrderDetailSerializer, **_ORDER_ERRORS},
    ),
    cancel=extend_schema(
        summary="Cancel an order (operators: any; traders: their own)",
        description="A NEW order is canceled at once; a live one goes through its broker"
        " (CANCELED, or back to ACCEPTED if the broker refuses). 409 for a final order.",
        request=OrderCancelSerializer,
        responses={
            200: OrderDetailSerializer,
            400: _ORDER_ERRORS[400],
            409: OpenApiResponse(description="The order is final (filled, canceled, ...)."),
        },
    ),
)
class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Orders: see the module docstring for who may do what and the idempotency rules."""

    read_roles = ALL_ROLES
    write_roles = frozenset({Role.OPERATOR, Role.TRADER})
    owner_field = "user"
    filter_backends = [DjangoFilterBackend]
    filterset_class = OrderFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-created_at", "-id")
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        if self.action in ("list", "cancel"):
            return selectors.order_list()
        return selectors.order_detail()

    def get_serializer_class(self):
        if self.action == "list":
            return OrderSerializer
        if self.action == "create":
            return OrderCreateSerializer
        if self.action == "cancel":
            return OrderCancelSerializer
        return OrderDetailSerializer

    def create(self, request, *args, **kwargs):
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        terms = serializer.validated_data
        user = request.user
        existing = selectors.order_by_client_id(client_order_id=terms["client_order_id"])
        if existing is not None and existing.user_id != user.pk:
            raise _key_taken(terms["client_order_id"])
        order, created = oms.order_place(**terms, user=user, actor=api_actor(user))
        if order.user_id != user.pk:  # someone else's order with that key won a race
            raise _key_taken(terms["client_order_id"])
        return self._detail(order.pk, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        order = self.get_object()  # 404, then the owner check (403)
        serializer = OrderCancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        oms.order_cancel(
            order_id=order.pk,
            actor=api_actor(request.user),
            reason=serializer.validated_data.get("reason", ""),
        )
        return self._detail(order.pk, status.HTTP_200_OK)

    def _detail(self, order_id: int, code: int) -> Response:
        # Read after the OMS's own transactions committed: the order as it stands now.
        order = selectors.order_get(order_id=order_id)
        return Response(OrderDetailSerializer(order, context=self.get_serializer_context()).data,
                        status=code)  # fmt: skip


class AccountViewSet(viewsets.ReadOnlyModelViewSet):
    """Cash per broker account (KRW), read-only: fills change it."""

    serializer_class = AccountSerializer
    lookup_field = "broker"
    lookup_value_regex = "[a-z0-9_-]+"

    def get_queryset(self):
        return selectors.account_list()
