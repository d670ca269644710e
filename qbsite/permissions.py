"""The API's permission scheme (one class, policy declared on each view).

A view says which roles may read and which may write:

    read_roles = {Role.OPERATOR, Role.TRADER, Role.CLIENT}   # the default
    write_roles = {Role.OPERATOR}                              # the default

and, for objects that belong to someone, `owner_field` (e.g. "placed_by"): a trader may
then write only objects it owns, while an operator may write any. Anonymous -> 401,
authenticated without the role -> 403.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from qbsite.roles import Role, role_of

ALL_ROLES = frozenset(Role)


class RolePermission(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request, view) -> bool:
        role = role_of(request.user)
        if role is None:
            return False
        allowed = (
            getattr(view, "read_roles", ALL_ROLES)
            if request.method in SAFE_METHODS
            else getattr(view, "write_roles", frozenset({Role.OPERATOR}))
        )
        return role in allowed

    def has_object_permission(self, request, view, obj) -> bool:
        role = role_of(request.user)
        if role is None:
            return False
        if request.method in SAFE_METHODS or role is Role.OPERATOR:
            return True
        owner_field = getattr(view, "owner_field", None)
        if owner_field is None:
            return False
        return _owner_id(obj, owner_field) == request.user.pk


def _owner_id(obj, owner_field: str):
    if owner_field == "self":
        return obj.pk
    return getattr(obj, f"{owner_field}_id", None)
