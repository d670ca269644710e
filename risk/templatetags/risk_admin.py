"""The trading state panel of the admin dashboard (templates/admin/index.html)."""

from django import template

from risk.models import State, TradingState

register = template.Library()


@register.inclusion_tag("admin/risk/trading_state_panel.html", takes_context=True)
def trading_state_panel(context):
    row = TradingState.objects.filter(pk=1).first() or TradingState()
    return {
        "trading_state": row,
        "states": State.choices,
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }
