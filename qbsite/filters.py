"""Filter pieces shared by every app's API: strict about bad input (400), never silent.

django-filter's stock BooleanFilter reads "maybe" as "no filter" and its date-time filters
read a time without a zone in the server's zone; QB answers both with a 400 instead.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.dateparse import parse_datetime
from rest_framework.filters import OrderingFilter

from qbsite.fields import symbol_validator

AWARE_EXAMPLE = "2024-05-02T09:00:00+09:00"


def parse_aware_datetime(value: str):
    """An ISO 8601 date-time with a timezone, or ValidationError saying what is wrong."""
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValidationError(
            f"{value!r} is not an ISO 8601 date and time (e.g. {AWARE_EXAMPLE}).",
            code="invalid",
        )
    if parsed.tzinfo is None:
        raise ValidationError(
            f"{value!r} has no timezone: add Z or an offset (e.g. {AWARE_EXAMPLE}).",
            code="naive",
        )
    return parsed


class AwareDateTimeFormField(forms.Field):
    def to_python(self, value):
        if value in self.empty_values:
            return None
        return parse_aware_datetime(str(value))


class AwareDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 with a timezone ("Z" or "+09:00"); a naive or garbled value is a 400."""

    field_class = AwareDateTimeFormField


class StrictBooleanFormField(forms.Field):
    TRUE = {"true", "1", "yes"}
    FALSE = {"false", "0", "no"}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        lowered = str(value).strip().lower()
        if lowered in self.TRUE:
            return True
        if lowered in self.FALSE:
            return False
        raise ValidationError(f"{value!r} is not a boolean: use true or false.", code="invalid")


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanFormField


class SymbolFilter(django_filters.CharFilter):
    """A KRX symbol, exact; a malformed one is a 400 rather than an empty page."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("help_text", "KRX short code, six digits or capital letters (005930).")
        super().__init__(*args, **kwargs)
        self.extra.setdefault("validators", [symbol_validator])


def time_range_filters(field_name: str, label: str):
    """The pair <field>_after (inclusive) / <field>_before (exclusive): half-open ranges
    chain without overlap (one day = after 00:00, before the next 00:00)."""
    after = AwareDateTimeFilter(
        field_name=field_name,
        lookup_expr="gte",
        help_text=f"{label} at or after this instant (ISO 8601 with timezone, inclusive).",
    )
    before = AwareDateTimeFilter(
        field_name=field_name,
        lookup_expr="lt",
        help_text=f"{label} before this instant (ISO 8601 with timezone, exclusive).",
    )
    return after, before


class StableOrderingFilter(OrderingFilter):
    """?ordering=... that always ends on the primary key, so page N and page N+1 of a
    non-unique ordering (e.g. by name) neither repeat nor skip a row."""

    def get_ordering(self, request, queryset, view):
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if not any(name.lstrip("-") in ("pk", queryset.model._meta.pk.name) for name in ordering):
            ordering.append("pk")
        return ordering


class QBFilterSet(django_filters.FilterSet):
    """The base of every API FilterSet: auto-generated boolean filters are strict too."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        models.BooleanField: {"filter_class": StrictBooleanFilter},
    }


class UserFilter(QBFilterSet):
    class Meta:
        model = User
        fields = ["is_active"]
