"""The admin's shared parts: the QB admin site, who may use it, and the big-table tools.

Who may use the admin: operators, i.e. `qbsite.roles.role_of(user) is Role.OPERATOR` (staff or
superuser), the same rule the API uses. We chose this over Django's per-model permissions
(an "operators" group filled by a data migration and a post-save hook) because that would be a
second, drifting copy of the role rules: a new model would need its permissions granted, a
user made staff would need the group, and the admin and the API could disagree about who is an
operator. So `QBAdminSite.has_permission` and `OperatorAdmin.has_*_permission` ask `role_of`,
and read-only models say so in code (`ReadOnlyOperatorAdmin`), not in a permission table.
Django's permissions still apply where they protect something: users, groups and tokens
(qbsite/admin.py).

Big tables (market_data, system_logs, trades): see `BigTableAdminMixin`.
"""

from __future__ import annotations

import datetime

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_last_value_from_parameters
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections, router
from django.utils import timezone
from django.utils.functional import cached_property

from qbsite.roles import Role, role_of

SITE_HEADER = "QB back office"


def is_operator(request) -> bool:
    return role_of(request.user) is Role.OPERATOR


# --- The site (made `admin.site` by qbsite.apps.QBAdminConfig) --------------------------
class QBAdminAuthenticationForm(AdminAuthenticationForm):
    """Lets in exactly the users `QBAdminSite.has_permission` lets in."""

    def confirm_login_allowed(self, user):
        if role_of(user) is not Role.OPERATOR:
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class QBAdminSite(admin.AdminSite):
    site_header = SITE_HEADER
    site_title = "QB"
    index_title = "Operations"
    login_form = QBAdminAuthenticationForm

    def has_permission(self, request) -> bool:
        return is_operator(request)

    def each_context(self, request):
        from django.conf import settings

        context = super().each_context(request)
        # Shown in the header so nobody mistakes production or the real KIS account for a test.
        context["qb_environment"] = settings.ENVIRONMENT
        context["qb_kis_env"] = settings.KIS_ENV
        return context


# --- Model admins ----------------------------------------------------------------------------
class OperatorAdmin(admin.ModelAdmin):
    """Operators may do everything; everybody else never reaches a model page (site check)."""

    def has_module_permission(self, request) -> bool:
        return is_operator(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request)

    def has_add_permission(self, request) -> bool:
        return is_operator(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return is_operator(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return is_operator(request)


class ReadOnlyOperatorAdmin(OperatorAdmin):
    """For rows written by engines and services only (ledger, feeds, audit trail)."""

    actions = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- Big tables ------------------------------------------------------------------------------
EXACT_COUNT_CAP = 10_000


def estimated_table_rows(model) -> int:
    """The planner's row estimate for the model's table: free, and fresh after autovacuum.

    market_data asks marketdata.timescale, which knows how to estimate a hypertable (its rows
    live in chunks, so pg_class of the parent says 0).
    """
    from marketdata import timescale

    table = model._meta.db_table
    with connections[router.db_for_read(model)].cursor() as cursor:
        if table == timescale.TABLE:
            return timescale.estimated_row_count(cursor)
        cursor.execute(
            "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            [table],
        )
        row = cursor.fetchone()
    return int(row[0] or 0) if row else 0


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a whole big table, filtered or not.

    - No filter: the table's estimate (pg_class / TimescaleDB). If the estimate is below
      EXACT_COUNT_CAP we count instead, bounded by the cap: the table is then small, or has
      never been analyzed (estimate 0), and an under-estimate would make the changelist think
      everything fits on one page and fetch the whole table unsliced.
    - A filter or search: COUNT(*) over a LIMIT EXACT_COUNT_CAP subquery, which reads at
      most that many matching rows. Chosen over EXPLAIN's estimate, which is free but for
      correlated predicates (symbol AND interval AND time) is often off by orders of magnitude:
      pages would be offered that are empty, or hidden that exist. The capped count is exact
      for the narrow queries operators run (one symbol, one day; errors of the last hour) and
      costs no more than the page query itself for the broad ones. Above the cap the count
      says EXACT_COUNT_CAP: the operator narrows the filter rather than pages past page 100.
    """

    cap = EXACT_COUNT_CAP

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where and not queryset.query.distinct:
            estimate = estimated_table_rows(queryset.model)
            if estimate >= self.cap:
                return estimate
        return queryset.order_by().values("pk")[: self.cap].count()


class BigTableAdminMixin:
    """STYLE.md's rules for tables of tens of millions of rows."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    # A date_hierarchy runs SELECT DISTINCT over the dates of the whole (filtered) table;
    # RecentTimeFilter gives the ranges operators use, as plain indexed range conditions.
    date_hierarchy = None
    list_per_page = 100


class RecentTimeFilter(admin.FieldListFilter):
    """Last hour / today (Seoul) / 7 days / 30 days on a datetime field: `field >= since`.

    Use as `list_filter = [("timestamp", RecentTimeFilter)]`. One indexed range condition,
    no DISTINCT, no counts.
    """

    RANGES = {
        "1h": "Last hour",
        "today": "Today (KST)",
        "24h": "Last 24 hours",
        "7d": "Last 7 days",
        "30d": "Last 30 days",
    }

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.parameter_name = f"{field_path}__recent"
        self.value = get_last_value_from_parameters(params, self.parameter_name)
        # The base class moves our parameter out of `params` into `used_parameters`.
        super().__init__(field, request, params, model, model_admin, field_path)

    def since(self, value: str) -> datetime.datetime:
        now = timezone.now()
        if value == "today":
            # The KRX trading day is a Seoul calendar day (TIME_ZONE is Asia/Seoul).
            return timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        hours = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}[value]
        return now - datetime.timedelta(hours=hours)

    def expected_parameters(self):
        return [self.parameter_name]

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        if self.value is None:
            return queryset
        if self.value not in self.RANGES:
            choices = ", ".join(self.RANGES)
            raise IncorrectLookupParameters(
                f"{self.parameter_name} must be one of {choices}, not {self.value!r}."
            )
        return queryset.filter(**{f"{self.field_path}__gte": self.since(self.value)})

    def choices(self, changelist):
        yield {
            "selected": self.value is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Any time",
        }
        for value, label in self.RANGES.items():
            yield {
                "selected": self.value == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }
