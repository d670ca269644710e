"""The risk admin: limits (edited, every change audited through risk.services.limits_update),
the trading state (changed through risk.services.trading_state_set, from the dashboard's
buttons or its own page), locks (added and removed through the services, never deleted), and
the read-only history: limit changes, state changes, alerts, risk snapshots."""

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from qbsite.admin_utils import OperatorAdmin, ReadOnlyOperatorAdmin, RecentTimeFilter, is_operator
from qbsite.exceptions import QBError
from qbsite.roles import admin_actor
from risk import services
from risk.models import (
    LimitChange,
    LockKind,
    RiskAlert,
    RiskLimits,
    RiskLock,
    RiskMetric,
    TradingState,
    TradingStateChange,
)


@admin.register(RiskMetric)
class RiskMetricAdmin(ReadOnlyOperatorAdmin):
    list_display = (
        "timestamp",
        "portfolio_value",
        "daily_pnl",
        "var_95",
        "max_drawdown",
        "sharpe_ratio",
        "beta",
    )
    list_filter = (("timestamp", RecentTimeFilter),)
    ordering = ("-timestamp",)


# --- limits ----------------------------------------------------------------------------------


class RiskLimitsForm(forms.ModelForm):
    change_reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (kept with each change in the audit trail).",
    )

    class Meta:
        model = RiskLimits
        fields = list(services.LIMIT_FIELDS)


@admin.register(RiskLimits)
class RiskLimitsAdmin(OperatorAdmin):
    """One row: the list page opens it. Saving goes through limits_update (audited)."""

    form = RiskLimitsForm
    fieldsets = (
        (
            "Exposure (fractions of the portfolio value)",
            {
                "fields": (
                    "max_position_ratio",
                    "max_sector_ratio",
                    "max_exposure_ratio",
                    "min_cash_reserve_ratio",
                )
            },
        ),
        ("Order value (KRW)", {"fields": ("min_order_value", "max_order_value")}),
        (
            "Losses and pace",
            {
                "fields": (
                    "daily_loss_limit",
                    "monthly_loss_limit",
                    "max_consecutive_losses",
                    "max_trades_per_day",
                    "same_symbol_interval_seconds",
                    "max_orders_per_second",
                )
            },
        ),
        (
            "Protections (risk engine)",
            {
                "fields": (
                    "stop_loss_ratio",
                    "take_profit_ratio",
                    "trailing_stop_ratio",
                    "stoploss_cooldown_seconds",
                    "stoploss_guard_count",
                    "stoploss_guard_window_seconds",
                    "stoploss_guard_lock_seconds",
                )
            },
        ),
        (
            "Risk engine",
            {"fields": ("benchmark_symbol", "metrics_interval_seconds", "alert_dedup_seconds")},
        ),
        ("Audit", {"fields": ("change_reason",)}),
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        services.limits_get()  # makes the row when a flushed database lost it
        return HttpResponseRedirect(reverse("admin:risk_risklimits_change", args=[1]))

    def save_model(self, request, obj, form, change):
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in services.LIMIT_FIELDS
        }
        if changes:
            services.limits_update(
                user=request.user,
                actor=admin_actor(request),
                reason=form.cleaned_data.get("change_reason", ""),
                **changes,
            )

    def log_change(self, request, obj, message):
        return None  # the audit trail is risk_limit_changes (with old and new values)


@admin.register(LimitChange)
class LimitChangeAdmin(ReadOnlyOperatorAdmin):
    list_display = ("changed_at", "field", "old_value", "new_value", "actor", "reason")
    list_filter = ("field", ("changed_at", RecentTimeFilter))
    list_select_related = ("changed_by",)
    ordering = ("-changed_at", "-id")


# --- trading state ---------------------------------------------------------------------------


@admin.register(TradingState)
class TradingStateAdmin(ReadOnlyOperatorAdmin):
    """Shown read-only; changed by the dashboard's buttons (POST to `set/`)."""

    list_display = ("state", "reason", "changed_by", "changed_at", "automatic")

    def get_urls(self):
        return [
            path(
                "set/",
                self.admin_site.admin_view(self.set_state_view),
                name="risk_tradingstate_set",
            ),
            *super().get_urls(),
        ]

    def set_state_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not is_operator(request):
            return HttpResponseRedirect(reverse("admin:login"))
        state = request.POST.get("state", "")
        reason = request.POST.get("reason", "").strip() or "Set from the admin dashboard."
        try:
            changed = services.trading_state_set(
                state=state, actor=admin_actor(request), reason=reason
            )
        except QBError as exc:
            messages.error(request, exc.message)
        else:
            if changed:
                messages.success(request, f"Trading state is now {state}.")
            else:
                messages.info(request, f"Trading state was already {state}.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = reverse("admin:index")  # only back to a page of this site
        return HttpResponseRedirect(back)


@admin.register(TradingStateChange)
class TradingStateChangeAdmin(ReadOnlyOperatorAdmin):
    list_display = ("at", "from_state", "to_state", "actor", "automatic", "reason")
    list_filter = ("to_state", "automatic", ("at", RecentTimeFilter))
    ordering = ("-at", "-id")


# --- locks -----------------------------------------------------------------------------------


class RiskLockForm(forms.ModelForm):
    class Meta:
        model = RiskLock
        fields = ("kind", "symbol", "strategy", "until", "reason")


@admin.register(RiskLock)
class RiskLockAdmin(OperatorAdmin):
    """Added through lock_create; removed by the action (lock_remove), never deleted."""

    form = RiskLockForm
    list_display = (
        "id",
        "kind",
        "symbol",
        "strategy",
        "until",
        "is_active",
        "reason",
        "created_by",
        "removed_by",
    )
    list_filter = ("kind", ("created_at", RecentTimeFilter))
    list_select_related = ("strategy",)
    raw_id_fields = ("symbol", "strategy")
    actions = ["remove_locks"]
    ordering = ("-created_at", "-id")

    def get_changeform_initial_data(self, request):
        return {"kind": LockKind.MANUAL, "until": timezone.now() + timezone.timedelta(hours=1)}

    @admin.display(boolean=True, description="active")
    def is_active(self, lock) -> bool:
        now = timezone.now()
        return lock.removed_at is None and lock.created_at <= now < lock.until

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and is_operator(request)  # the list (for the action), no edits

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        lock = services.lock_create(
            kind=obj.kind,
            until=obj.until,
            reason=obj.reason,
            actor=admin_actor(request),
            symbol=obj.symbol_id,
            strategy=obj.strategy_id,
        )
        obj.pk = lock.pk

    @admin.action(description="Remove the selected locks now")
    def remove_locks(self, request, queryset):
        removed = 0
        for lock in queryset.filter(removed_at__isnull=True):
            services.lock_remove(lock_id=lock.pk, actor=admin_actor(request))
            removed += 1
        self.message_user(request, f"{removed} lock(s) removed.")


@admin.register(RiskAlert)
class RiskAlertAdmin(ReadOnlyOperatorAdmin):
    list_display = (
        "created_at",
        "severity",
        "alert_type",
        "symbol",
        "current_value",
        "limit_value",
        "message",
        "action_taken",
    )
    list_filter = ("severity", "alert_type", ("created_at", RecentTimeFilter))
    search_fields = ("=alert_type", "=symbol__symbol")
    ordering = ("-created_at", "-id")
