"""Pagination for the API.

- PageNumberPagination: small tables (stocks, positions, users, strategy performance).
- KeysetCursorPagination: time series (market data, trades, risk metrics, system logs).
  Stable under inserts and never runs a COUNT.

Bad paging input (page=abc, page_size=0, a tampered cursor) is a 400 naming the parameter,
not a silent fallback to the default and not a 404.
"""

from __future__ import annotations

import binascii
import json
from base64 import urlsafe_b64decode, urlsafe_b64encode
from datetime import datetime
from decimal import Decimal
from functools import reduce
from operator import or_

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param


def _page_size(request, param: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(param)
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= maximum:
        raise ValidationError({param: [f"Must be a whole number from 1 to {maximum}."]})
    return size


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request):
        return _page_size(request, self.page_size_query_param, self.page_size, self.max_page_size)

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param) or 1
        if raw in self.last_page_strings:
            return raw
        try:
            number = int(raw)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            raise ValidationError({self.page_query_param: ["Must be a whole number from 1."]})
        # A page past the end stays a 404 (DRF's "Invalid page."): the number was well formed.
        return number


class KeysetCursorPagination(pagination.BasePagination):
    """Keyset ("seek") pagination on a unique ordering declared by the view.

    The view sets ``cursor_ordering``, e.g. ``("-time", "symbol", "interval")``: the fields
    must be non-null and together unique, so that every row has exactly one place. The cursor
    holds the last row's values of those fields; the next page is the rows strictly after
    them. Unlike DRF's CursorPagination (a position on the first field plus an offset capped
    at 1000), this stays exact however many rows share a timestamp (e.g. 2,000 symbols' daily
    candles at the same time), and each page is one index range scan.
    """

    cursor_query_param = "cursor"
    cursor_query_description = "The pagination cursor value (from `next` or `previous`)."
    page_size = 500
    page_size_query_param = "page_size"
    page_size_query_description = "Number of results to return per page (1 to 5000)."
    max_page_size = 5000
    template = None

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.size = _page_size(
            request, self.page_size_query_param, self.page_size, self.max_page_size
        )
        self.ordering = tuple(view.cursor_ordering)
        self.model = queryset.model
        reverse, position = self._decode(request, queryset.model)

        ordering = _flip(self.ordering) if reverse else self.ordering
        if position is not None:
            queryset = queryset.filter(_after(ordering, position))
        rows = list(queryset.order_by(*ordering)[: self.size + 1])
        has_more = len(rows) > self.size
        rows = rows[: self.size]
        if reverse:
            rows.reverse()

        self.next_position = self.previous_position = None
        self.has_next = has_more if not reverse else True
        self.has_previous = position is not None if not reverse else has_more
        if rows:
            self.next_position = self._position(rows[-1])
            self.previous_position = self._position(rows[0])
        return rows

    def get_paginated_response(self, data):
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_next_link(self):
        if not self.has_next:
            return None
        if self.next_position is None:
            # An empty page reached backwards: start again from the newest row.
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self._link(False, self.next_position)

    def get_previous_link(self):
        if not self.has_previous or self.previous_position is None:
            return None
        return self._link(True, self.previous_position)

    # --- cursor encoding: base64(JSON {"r": reverse, "p": [values]}) ---------------------

    def _position(self, row) -> list:
        meta = self.model._meta
        return [
            _jsonable(getattr(row, meta.get_field(name.lstrip("-")).attname))
            for name in self.ordering
        ]

    def _link(self, reverse: bool, position: list) -> str:
        raw = json.dumps({"r": reverse, "p": position}, separators=(",", ":"))
        token = urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return replace_query_param(self.base_url, self.cursor_query_param, token)

    def _decode(self, request, model):
        token = request.query_params.get(self.cursor_query_param)
        if not token:
            return False, None
        invalid = ValidationError(
            {self.cursor_query_param: ["Invalid cursor: use the `next` or `previous` link as is."]}
        )
        try:
            data = json.loads(urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            reverse, raw_values = data["r"], data["p"]
            if not isinstance(reverse, bool) or not isinstance(raw_values, list):
                raise invalid
            if len(raw_values) != len(self.ordering):
                raise invalid
            values = []
            for name, raw in zip(self.ordering, raw_values, strict=True):
                field = model._meta.get_field(name.lstrip("-"))
                value = field.to_python(raw)
                if value is None:
                    raise invalid
                if isinstance(value, datetime) and value.tzinfo is None:
                    raise invalid
                values.append(value)
        except (
            ValueError,
            TypeError,
            KeyError,
            binascii.Error,
            DjangoValidationError,
            FieldDoesNotExist,
        ):
            raise invalid from None
        return reverse, values

    # --- OpenAPI ----------------------------------------------------------------------------

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": self.cursor_query_description,
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": self.page_size_query_description,
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]

    def get_paginated_response_schema(self, schema):
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }


def _flip(ordering: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name[1:] if name.startswith("-") else f"-{name}" for name in ordering)


def _after(ordering: tuple[str, ...], values: list) -> Q:
    """Rows strictly after `values` in `ordering` (a lexicographic comparison).

    (a, b, c) > (x, y, z)  <=>  a > x  or  (a = x and b > y)  or  (a = x and b = y and c > z),
    with > read as < for descending fields. The redundant bound on the first field lets
    PostgreSQL turn the OR into an index range scan.
    """
    names = [name.lstrip("-") for name in ordering]
    ops = ["lt" if name.startswith("-") else "gt" for name in ordering]
    branches = []
    for i in range(len(ordering)):
        equal = {names[j]: values[j] for j in range(i)}
        branches.append(Q(**equal, **{f"{names[i]}__{ops[i]}": values[i]}))
    first_bound = Q(**{f"{names[0]}__{ops[0]}e": values[0]})
    return first_bound & reduce(or_, branches)


def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
