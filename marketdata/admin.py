"""Admin for symbols and market data.

market_data has a composite primary key (symbol, interval, time), and Django 5.2's
AdminSite.register refuses such models. We register `MarketDataRow` instead: an unmanaged model
over the same table (marketdata/models.py), read-only, whose rows are named in URLs by a key
that encodes the real primary key, e.g. `005930.1m.20250102T000000Z`:

- `MarketDataRowAdmin.get_object` decodes it into symbol = .. AND interval = .. AND time = ..
  (the primary-key index), and `MarketDataChangeList.url_for_result` encodes it for the links;
- the change page's history link and the history page's link back use the same key
  (templates/admin/marketdata/marketdatarow/);
- the key holds only [0-9A-Za-z.], so the admin's URL quoting leaves it as it is.

Rejected alternatives: registering MarketData past the check (by writing into the site's
registry) leaves the rest of the admin to meet a tuple-valued pk it does not support; a SQL view
with a synthetic key column cannot use the primary-key index when looked up by that key.
"""

from __future__ import annotations

import datetime
import re

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.urls import reverse

from marketdata.models import MarketDataRow, Stock
from qbsite.admin_utils import (
    BigTableAdminMixin,
    OperatorAdmin,
    ReadOnlyOperatorAdmin,
    RecentTimeFilter,
)
from qbsite.fields import SYMBOL_REGEX


@admin.register(Stock)
class StockAdmin(OperatorAdmin):
    # A few thousand listed names: a small table, so a plain search and counts are fine.
    list_display = ("symbol", "name", "market", "sector", "market_cap", "shares_outstanding")
    list_filter = ("market", "sector")
    search_fields = ("^symbol", "name")  # also serves the autocomplete of every FK to Stock
    readonly_fields = ("updated_at",)
    ordering = ("symbol",)

    def get_readonly_fields(self, request, obj=None):
        # The symbol is the primary key: other tables point at it, so it is set once.
        if obj is not None:
            return ("symbol", *self.readonly_fields)
        return self.readonly_fields


_KEY_TIME_FORMAT = "%Y%m%dT%H%M%S"
_KEY_RE = re.compile(
    r"^(?P<symbol>[0-9A-Z]{6})\.(?P<interval>[0-9a-z]{1,4})\."
    r"(?P<time>\d{8}T\d{6})(?:\.(?P<micro>\d{6}))?Z$"
)


def market_data_key(row) -> str:
    """`symbol.interval.YYYYmmddTHHMMSS[.ffffff]Z` (UTC): names one market_data row."""
    utc = row.time.astimezone(datetime.UTC)
    micro = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"{row.symbol}.{row.interval}.{utc:{_KEY_TIME_FORMAT}}{micro}Z"


def parse_market_data_key(key: str) -> dict | None:
    """The lookup for a key from `market_data_key`, or None when it is not one."""
    match = _KEY_RE.match(key)
    if match is None:
        return None
    try:
        time = datetime.datetime.strptime(match["time"], _KEY_TIME_FORMAT)
    except ValueError:
        return None
    time = time.replace(microsecond=int(match["micro"] or 0), tzinfo=datetime.UTC)
    return {"symbol": match["symbol"], "interval": match["interval"], "time": time}


class MarketDataChangeList(ChangeList):
    def url_for_result(self, result):
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(quote(market_data_key(result)),),
            current_app=self.model_admin.admin_site.name,
        )


@admin.register(MarketDataRow)
class MarketDataRowAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = ("time", "symbol", "interval", "open", "high", "low", "close", "volume")
    # No filter on symbol: listing its values would be a DISTINCT over the whole table.
    list_filter = (("time", RecentTimeFilter), "interval")
    search_fields = ("=symbol",)
    search_help_text = "A full symbol (005930) or part of a stock's name."
    ordering = ("-time", "symbol", "interval")
    # Sorting by price or volume would sort the whole table; time has its own index.
    sortable_by = ("time",)

    def get_changelist(self, request, **kwargs):
        return MarketDataChangeList

    def get_object(self, request, object_id, from_field=None):
        lookup = parse_market_data_key(object_id)
        if lookup is None:
            return None
        return self.get_queryset(request).filter(**lookup).first()

    def get_search_results(self, request, queryset, search_term):
        """Each term is a symbol (exact, on the key index) or part of a stock name.

        The admin's own search would compare UPPER(symbol), which no index serves; the names
        are looked up in stocks_metadata (a few thousand rows) and become `symbol IN (...)`.
        """
        terms = search_term.split()
        if not terms:
            return queryset, False
        for term in terms:
            symbol = term.upper()
            if re.fullmatch(SYMBOL_REGEX, symbol):
                queryset = queryset.filter(symbol=symbol)
            else:
                names = Stock.objects.filter(name__icontains=term).values("symbol")
                queryset = queryset.filter(symbol__in=names)
        return queryset, False

    def _key_context(self, object_id, extra_context):
        return {**(extra_context or {}), "market_data_key": object_id}

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, self._key_context(object_id, extra_context)
        )

    def history_view(self, request, object_id, extra_context=None):
        return super().history_view(request, object_id, self._key_context(object_id, extra_context))
