"""Admin for orders, accounts, the ledger (trades), positions and strategy performance.

Orders are written by the order management system (trading.oms): view only, with their
history (transitions and fills, read-only inlines) and one action, "Cancel the selected
orders", which goes through oms.order_cancel like the API's cancel. Trades are a ledger
written by the order path: view only. Accounts: the cash is the fills' to change, so it is
read-only; an account is created with its initial cash (which is then its cash) and never
edited or deleted. Positions may be corrected by hand (a reconciliation with the broker), but
their cost basis and PnL are computed, so they are read-only; `manage.py reconcile` reports a
hand-edited position as a difference from its trades. Strategy performance is computed from
trades: view only. Broker reconciliations (trading.broker_sync): view only, with the actions
"Allow trading despite the disagreement" (recorded: who, when) and "End the override".
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import Q

from qbsite.admin_utils import (
    BigTableAdminMixin,
    OperatorAdmin,
    ReadOnlyOperatorAdmin,
    RecentTimeFilter,
    is_operator,
)
from qbsite.exceptions import QBError
from qbsite.roles import admin_actor
from trading import broker_sync, oms, services
from trading.brokers import BROKERS
from trading.models import (
    Account,
    BrokerSync,
    Order,
    OrderStatus,
    OrderTransition,
    Position,
    StrategyPerformance,
    Trade,
)
from trading.strategies import admin as _strategies_admin  # noqa: F401 (Strategy, Signal)


@admin.register(Trade)
class TradeAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = (
        "timestamp",
        "symbol",
        "side",
        "quantity",
        "price",
        "commission",
        "tax",
        "profit_loss",
        "strategy",
        "order_type",
        "status",
    )
    # No filter on strategy: its choices would be a DISTINCT over the ledger; search it instead.
    list_filter = (("timestamp", RecentTimeFilter), "side", "status", "order_type")
    search_fields = ("^symbol__symbol", "^symbol__name", "^strategy")
    list_select_related = ("symbol",)
    raw_id_fields = ("symbol",)
    ordering = ("-timestamp", "-id")
    sortable_by = ("timestamp",)


class OpenPositionFilter(admin.SimpleListFilter):
    title = "open / flat"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return (("yes", "Open"), ("no", "Flat"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(quantity__gt=0)
        if self.value() == "no":
            return queryset.filter(Q(quantity=0))
        return queryset


@admin.register(Position)
class PositionAdmin(OperatorAdmin):
    list_display = (
        "symbol",
        "stock_name",
        "quantity",
        "average_price",
        "cost_basis",
        "current_price",
        "market_value",
        "unrealized_pnl",
        "realized_pnl",
        "updated_at",
    )
    list_filter = (OpenPositionFilter,)
    search_fields = ("^symbol__symbol", "symbol__name")
    list_select_related = ("symbol",)
    autocomplete_fields = ("symbol",)
    readonly_fields = ("cost_basis", "unrealized_pnl", "realized_pnl", "updated_at")
    ordering = ("symbol",)

    @admin.display(description="name", ordering="symbol__name")
    def stock_name(self, obj):
        return obj.symbol.name

    @admin.display(description="market value")
    def market_value(self, obj):
        return obj.market_value


@admin.register(StrategyPerformance)
class StrategyPerformanceAdmin(ReadOnlyOperatorAdmin):
    list_display = (
        "date",
        "strategy",
        "total_return",
        "trades_count",
        "win_rate",
        "max_drawdown",
        "sharpe_ratio",
    )
    list_filter = ("strategy", ("date", admin.DateFieldListFilter))
    search_fields = ("^strategy",)
    ordering = ("-date", "strategy")


# --- orders ----------------------------------------------------------------------------------


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request)


class OrderTransitionInline(_ReadOnlyInline):
    model = OrderTransition
    fields = ("at", "from_status", "to_status", "filled_quantity", "actor", "reason")
    ordering = ("id",)
    verbose_name = "transition"


class OrderFillInline(_ReadOnlyInline):
    model = Trade
    fk_name = "order"
    fields = (
        "timestamp",
        "execution_id",
        "quantity",
        "price",
        "commission",
        "tax",
        "profit_loss",
        "status",
    )
    ordering = ("id",)
    verbose_name = "fill"


@admin.register(Order)
class OrderAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = (
        "created_at",
        "client_order_id",
        "symbol",
        "side",
        "order_type",
        "quantity",
        "limit_price",
        "filled_quantity",
        "average_fill_price",
        "status",
        "reason_code",
        "strategy",
        "user",
    )
    # Choice fields only: a filter on broker or strategy would be a DISTINCT over the table.
    list_filter = (("created_at", RecentTimeFilter), "status", "side", "order_type")
    search_fields = ("=client_order_id", "^symbol__symbol", "=broker_order_id")
    search_help_text = "A client order id, a symbol (or its start) or a broker order id."
    list_select_related = ("symbol", "strategy", "user")
    raw_id_fields = ("symbol", "strategy", "signal", "user")
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at",)
    inlines = (OrderTransitionInline, OrderFillInline)
    actions = ("cancel_orders",)  # view only otherwise: the history is the OMS's to write
    fieldsets = (
        (None, {"fields": ("client_order_id", "status", "reason_code", "reason")}),
        (
            "Terms",
            {"fields": ("symbol", "side", "order_type", "quantity", "limit_price")},
        ),
        ("Fills", {"fields": ("filled_quantity", "average_fill_price")}),
        ("Origin", {"fields": ("broker", "broker_order_id", "strategy", "signal", "user")}),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "submitted_at",
                    "accepted_at",
                    "last_fill_at",
                    "closed_at",
                    "updated_at",
                )
            },
        ),
    )

    @admin.action(description="Cancel the selected orders")
    def cancel_orders(self, request, queryset):
        outcomes: dict[str, list[str]] = {}
        refused = []
        for order_id, client_order_id in queryset.values_list("pk", "client_order_id"):
            try:
                order = oms.order_cancel(
                    order_id=order_id,
                    actor=admin_actor(request),
                    reason="Canceled by an operator in the admin.",
                )
            except QBError as exc:
                refused.append(exc.message)
                continue
            outcomes.setdefault(order.status, []).append(client_order_id)
        for status, ids in sorted(outcomes.items()):
            label = OrderStatus(status).label.lower()
            self.message_user(request, f"{len(ids)} order(s) now {label}: {', '.join(ids)}.")
        for message in refused:
            self.message_user(request, message, level=messages.WARNING)


@admin.register(OrderTransition)
class OrderTransitionAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = ("at", "order", "from_status", "to_status", "filled_quantity", "actor")
    list_filter = (("at", RecentTimeFilter), "to_status")
    search_fields = ("=order__client_order_id",)
    search_help_text = "An order's client order id."
    list_select_related = ("order",)
    raw_id_fields = ("order",)
    ordering = ("-id",)
    sortable_by = ()


# --- accounts --------------------------------------------------------------------------------


class AccountCreationForm(forms.ModelForm):
    broker = forms.ChoiceField(choices=[(name, name) for name in BROKERS])
    initial_cash = forms.DecimalField(
        min_value=0, max_digits=20, decimal_places=4, help_text="KRW; the account's cash at first."
    )

    class Meta:
        model = Account
        fields = ("broker", "initial_cash")


@admin.register(Account)
class AccountAdmin(OperatorAdmin):
    list_display = ("broker", "cash", "initial_cash", "updated_at")
    search_fields = ()
    ordering = ("broker",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = AccountCreationForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("broker", "initial_cash")
        return ("broker", "initial_cash", "cash", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("broker", "initial_cash", "cash", "updated_at")

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # cash is the fills' to change; initial cash is set once

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        account = services.account_ensure(broker=obj.broker, initial_cash=obj.initial_cash)
        obj.pk, obj.cash, obj.updated_at = account.pk, account.cash, account.updated_at


@admin.register(BrokerSync)
class BrokerSyncAdmin(ReadOnlyOperatorAdmin):
    list_display = ("broker", "status", "checked_at", "override_by", "override_at", "reason")
    readonly_fields = (
        "broker",
        "status",
        "checked_at",
        "reason",
        "report",
        "override_by",
        "override_at",
        "override_note",
    )
    actions = ("override", "end_override")

    @admin.action(description="Allow trading despite the disagreement (until the next check)")
    def override(self, request, queryset):
        for broker in queryset.values_list("broker", flat=True):
            try:
                broker_sync.sync_override(
                    broker=broker, user=request.user, note="Overridden in the admin."
                )
            except QBError as exc:
                self.message_user(request, exc.message, level=messages.WARNING)
                continue
            self.message_user(
                request,
                f"Trading with {broker} allowed by {request.user.get_username()} until the "
                "next reconciliation.",
                level=messages.WARNING,
            )

    @admin.action(description="End the override")
    def end_override(self, request, queryset):
        for broker in queryset.values_list("broker", flat=True):
            broker_sync.sync_override_clear(broker=broker)
            self.message_user(request, f"Override of {broker} ended.")
