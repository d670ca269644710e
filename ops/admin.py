"""Admin for system_logs: an audit trail of tens of millions of rows, so view only and
tuned as a big table (qbsite.admin_utils.BigTableAdminMixin)."""

from django.contrib import admin
from django.utils.text import Truncator

from ops.models import SystemLog
from qbsite.admin_utils import BigTableAdminMixin, ReadOnlyOperatorAdmin, RecentTimeFilter


@admin.register(SystemLog)
class SystemLogAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = ("timestamp", "level", "component", "short_message")
    # No filter on component: its choices would be a DISTINCT over the table; search it instead.
    list_filter = (("timestamp", RecentTimeFilter), "level")
    search_fields = ("^component", "^message")
    search_help_text = "The start of a component (qb.collector) or of a message."
    ordering = ("-timestamp", "-id")
    sortable_by = ("timestamp",)

    @admin.display(description="message")
    def short_message(self, obj):
        return Truncator(obj.message).chars(160)
