"""Admin for strategies (configured here) and signals (read-only, a big table).

Wired by one import in trading/admin.py (`from trading.strategies.admin import ...`), which
registers both on the QB admin site.

Strategies are written through the services: the form shows the service's checks (kind,
parameters against the class, interval, symbols in stocks_metadata, the name of a strategy
with trades) as field errors, and save_model calls strategy_create / strategy_update.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from qbsite.admin_utils import (
    BigTableAdminMixin,
    OperatorAdmin,
    ReadOnlyOperatorAdmin,
    RecentTimeFilter,
)
from qbsite.exceptions import QBError
from trading.models import Signal, Strategy

from . import ParameterError, UnknownStrategyKind, registry
from .services import strategy_create, strategy_update, strategy_validate

FIELDS = ("name", "kind", "parameters", "symbols", "interval", "enabled", "capital_allocation")


def _kind_choices():
    return [
        (kind, f"{kind}: {cls.label}" if cls.label else kind) for kind, cls in registry().items()
    ]


def parameters_help():
    """Every registered kind with its declared parameters and defaults (the field's help)."""
    items = []
    for kind, cls in registry().items():
        if cls.parameters:
            params = format_html_join(
                "; ", "<code>{}</code>: {}", ((n, p.describe()) for n, p in cls.parameters.items())
            )
        else:
            params = "no parameters"
        items.append((kind, params))
    return format_html(
        "A JSON object; missing parameters take their defaults.<ul>{}</ul>",
        format_html_join("", "<li><b>{}</b>: {}</li>", items),
    )


class StrategyAdminForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=_kind_choices)

    class Meta:
        model = Strategy
        fields = FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["parameters"].help_text = parameters_help()
        self.fields["parameters"].required = False

    def clean(self):
        cleaned = super().clean()
        if any(field in self.errors for field in FIELDS):
            return cleaned
        candidate = Strategy(**{field: cleaned.get(field) for field in FIELDS})
        if candidate.parameters is None:
            candidate.parameters = {}
        previous = self.instance.name if self.instance.pk else None
        try:
            strategy_validate(candidate, previous_name=previous)
        except UnknownStrategyKind as exc:
            self.add_error("kind", exc.message)
        except ParameterError as exc:
            self.add_error(
                "parameters", [f"{name}: {problem}" for name, problem in exc.errors.items()]
            )
        except QBError as exc:
            self.add_error(exc.details.get("field"), exc.message)
        else:
            cleaned["parameters"] = candidate.parameters
            cleaned["symbols"] = candidate.symbols
        return cleaned


@admin.register(Strategy)
class StrategyAdmin(OperatorAdmin):
    form = StrategyAdminForm
    list_display = (
        "name",
        "kind",
        "interval",
        "symbol_list",
        "enabled",
        "capital_allocation",
        "disabled_reason_short",
        "updated_at",
    )
    list_filter = ("enabled", "kind", "interval")
    search_fields = ("^name",)
    readonly_fields = ("disabled_reason", "created_at", "updated_at")
    fields = (*FIELDS, "disabled_reason", "created_at", "updated_at")
    ordering = ("name",)
    actions = ("enable_strategies", "disable_strategies")

    @admin.display(description="symbols")
    def symbol_list(self, obj):
        return ", ".join(obj.symbols)

    @admin.display(description="disabled because")
    def disabled_reason_short(self, obj):
        reason = obj.disabled_reason
        return reason if len(reason) <= 80 else reason[:77] + "..."

    def save_model(self, request, obj, form, change):
        data = {field: form.cleaned_data[field] for field in FIELDS}
        if change:
            strategy_update(strategy=obj, **data)
        else:
            created = strategy_create(**data)
            for field in Strategy._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding = False

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        done, failed = [], []
        for strategy in queryset.order_by("name"):
            try:
                strategy_update(strategy=strategy, enabled=enabled)
            except (QBError, ValidationError) as exc:
                message = exc.message if isinstance(exc, QBError) else "; ".join(exc.messages)
                failed.append(f"{strategy.name}: {message}")
            else:
                done.append(strategy.name)
        verb = "Enabled" if enabled else "Disabled"
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}.", messages.SUCCESS)
        for line in failed:
            self.message_user(request, f"Not {verb.lower()}: {line}", messages.ERROR)

    @admin.action(description="Enable the selected strategies")
    def enable_strategies(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected strategies")
    def disable_strategies(self, request, queryset):
        self._set_enabled(request, queryset, False)


@admin.register(Signal)
class SignalAdmin(BigTableAdminMixin, ReadOnlyOperatorAdmin):
    list_display = (
        "created_at",
        "strategy",
        "symbol",
        "interval",
        "time",
        "action",
        "confidence",
        "price",
        "quantity",
        "outcome",
        "reason",
    )
    # `strategy` lists the strategies table (small), never a DISTINCT over signals.
    list_filter = (("created_at", RecentTimeFilter), "action", "outcome", "interval", "strategy")
    search_fields = ("^symbol__symbol", "^strategy__name")
    list_select_related = ("strategy", "symbol")
    raw_id_fields = ("strategy", "symbol")
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at", "time")
