"""Stocks and candles. Reads for every role; writes for operators (through services)."""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.filters import SearchFilter
from rest_framework.response import Response

from marketdata.filters import MarketDataFilter, StockFilter
from marketdata.models import MarketData, Stock
from marketdata.serializers import CandleSerializer, StockSerializer
from marketdata.services import candle_upsert, stock_delete, stock_update, stock_upsert
from qbsite.filters import StableOrderingFilter
from qbsite.pagination import KeysetCursorPagination


@extend_schema_view(
    list=extend_schema(summary="Stocks (search: symbol prefix or part of the name)"),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(description="The stock has trades.")}
    ),
)
class StockViewSet(viewsets.ModelViewSet):
    queryset = Stock.objects.all()
    serializer_class = StockSerializer
    filter_backends = [DjangoFilterBackend, SearchFilter, StableOrderingFilter]
    filterset_class = StockFilter
    search_fields = ["^symbol", "name"]
    ordering_fields = ["symbol", "name", "market_cap", "updated_at"]
    ordering = ["symbol"]
    lookup_value_regex = "[0-9A-Z]{6}"

    def perform_create(self, serializer):
        serializer.instance, _ = stock_upsert(**serializer.validated_data)

    def perform_update(self, serializer):
        stock = serializer.instance
        if serializer.partial:
            serializer.instance = stock_update(stock=stock, **serializer.validated_data)
        else:
            fields = {"sector": "", "market_cap": None, "shares_outstanding": None}
            fields.update(serializer.validated_data)
            serializer.instance, _ = stock_upsert(symbol=stock.symbol, **fields)

    def perform_destroy(self, instance):
        stock_delete(stock=instance)


@extend_schema_view(
    list=extend_schema(
        summary="Candles, newest first (cursor pagination)",
        description=(
            "Ordered by time descending, then symbol and interval, so that the cursor is exact"
            " however many series share a timestamp. Filter by `symbol` and `interval` to read"
            " one series (served by the primary key's index); `time_after` is inclusive,"
            " `time_before` exclusive."
        ),
    ),
    create=extend_schema(
        summary="Store or correct a candle (operators)",
        description=(
            "An upsert on (symbol, interval, time): 201 when the candle is new, 200 when an"
            " existing candle was corrected."
        ),
        responses={201: CandleSerializer, 200: CandleSerializer},
    ),
)
class MarketDataViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = MarketData.objects.all()
    serializer_class = CandleSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = MarketDataFilter
    pagination_class = KeysetCursorPagination
    cursor_ordering = ("-time", "symbol", "interval")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        candle, created = candle_upsert(**serializer.validated_data)
        return Response(
            self.get_serializer(candle).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
