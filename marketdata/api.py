"""Stocks and candles. Reads for every role; writes for operators (through services)."""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.filters import SearchFilter
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from marketdata.filters import MarketDataFilter, StockFilter
from marketdata.models import MarketData, Stock
from marketdata.selectors import candles_page, indicators_latest, quote_latest
from marketdata.serializers import (
    CandleQuerySerializer,
    CandleSerializer,
    CandleSeriesSerializer,
    IndicatorsSerializer,
    QuoteSerializer,
    StockSerializer,
)
from marketdata.services import candle_upsert, stock_delete, stock_update, stock_upsert
from qbsite.filters import StableOrderingFilter
from qbsite.pagination import KeysetCursorPagination, _page_size


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


# --- Real-time reads: Redis first (the collector's buffer), PostgreSQL beyond ----------------


class QuoteView(APIView):
    @extend_schema(
        summary="Latest quote of a symbol (from Redis)",
        description=(
            "The collector's `market:{symbol}` hash: prices as decimal strings, null where not"
            " known yet (no previous close). 404 for an unknown symbol, or a known one without"
            " a quote yet."
        ),
        responses={200: QuoteSerializer, 404: OpenApiResponse(description="No such quote.")},
    )
    def get(self, request, symbol: str):
        return Response(QuoteSerializer(quote_latest(symbol=symbol)).data)


class IndicatorsView(APIView):
    @extend_schema(
        summary="Latest indicators of a symbol (from Redis)",
        description="SMA 20, RSI 14 (Wilder), MACD 12/26/9, as the indicators engine wrote them.",
        responses={200: IndicatorsSerializer, 404: OpenApiResponse(description="None yet.")},
    )
    def get(self, request, symbol: str):
        return Response(IndicatorsSerializer(indicators_latest(symbol=symbol)).data)


class CandleSeriesPagination(KeysetCursorPagination):
    """The cursors and page shape of /market-data/, over the merged Redis + PostgreSQL series.

    Within one series (symbol, interval) `time` alone is unique, so the cursor holds it only.
    """

    def paginate_candles(self, request, *, symbol, interval, time_after=None, time_before=None):
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.size = _page_size(
            request, self.page_size_query_param, self.page_size, self.max_page_size
        )
        self.ordering = ("-time",)
        self.model = MarketData
        reverse, position = self._decode(request, MarketData)
        rows, has_more = candles_page(
            symbol=symbol,
            interval=interval,
            size=self.size,
            time_after=time_after,
            time_before=time_before,
            position=position[0] if position else None,
            reverse=reverse,
        )
        self.next_position = self.previous_position = None
        self.has_next = has_more if not reverse else True
        self.has_previous = position is not None if not reverse else has_more
        if rows:
            self.next_position = self._position(rows[-1])
            self.previous_position = self._position(rows[0])
        return rows


@extend_schema_view(
    get=extend_schema(
        summary="Candles of one series, newest first: Redis for the latest, PostgreSQL beyond",
        description=(
            "One response shape for both stores; each candle appears once. The newest may be"
            " the candle still being built (`closed`: false). Cursor pagination as on"
            " /market-data/; `time_after` is inclusive, `time_before` exclusive. Either"
            " /candles/?symbol=005930&interval=1m or /candles/005930/1m/."
        ),
        parameters=[CandleQuerySerializer],
        operation_id="candles_list",
    )
)
class CandleSeriesView(GenericAPIView):
    serializer_class = CandleSeriesSerializer
    pagination_class = CandleSeriesPagination
    filter_backends = []

    def get(self, request, symbol: str | None = None, interval: str | None = None):
        params = request.query_params.dict()
        if symbol is not None:
            params.update(symbol=symbol, interval=interval)
        query = CandleQuerySerializer(data=params)
        query.is_valid(raise_exception=True)
        rows = self.paginator.paginate_candles(request, **query.validated_data)
        return self.paginator.get_paginated_response(self.get_serializer(rows, many=True).data)


@extend_schema_view(
    get=extend_schema(
        summary="Candles of one series (symbol and interval in the path)",
        description="The same as /candles/?symbol=&interval=.",
        parameters=[
            OpenApiParameter("time_after", OpenApiTypes.DATETIME, description="Inclusive."),
            OpenApiParameter("time_before", OpenApiTypes.DATETIME, description="Exclusive."),
        ],
        operation_id="candles_series_list",
    )
)
class CandleSeriesPathView(CandleSeriesView):
    pass
