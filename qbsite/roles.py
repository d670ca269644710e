"""Who may do what. Three roles, from the user's flags and groups:

- operator: staff (or superuser); runs the system, everything in the admin and the API;
- trader: member of the "trader" group; reads everything trading, places and manages
  its own orders (later issues), its own objects only;
- client: member of the "client" group; read-only API access to market data and results.

An authenticated user with none of these is a stranger: no access. Anonymous users get 401.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"
    TRADER = "trader"
    CLIENT = "client"


TRADER_GROUP = "trader"
CLIENT_GROUP = "client"


def role_of(user) -> Role | None:
    if not user or not user.is_authenticated or not user.is_active:
        return None
    if user.is_staff or user.is_superuser:
        return Role.OPERATOR
    # Cached on the user object: one query per request, not per permission check.
    groups = getattr(user, "_qb_group_names", None)
    if groups is None:
        groups = set(user.groups.values_list("name", flat=True))
        user._qb_group_names = groups
    if TRADER_GROUP in groups:
        return Role.TRADER
    if CLIENT_GROUP in groups:
        return Role.CLIENT
    return None


# Who a change is recorded as (OrderTransition.actor, LimitChange.actor, ...: 64 characters).
def api_actor(user) -> str:
    return f"api:{user.get_username()}"[:64]


def admin_actor(request) -> str:
    return f"admin:{request.user.get_username()}"[:64]
