"""Writes to users: profile fields and the role (qbsite/roles.py decides what a role is)."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import transaction

from qbsite.exceptions import Conflict
from qbsite.roles import CLIENT_GROUP, TRADER_GROUP, Role, role_of

_ROLE_GROUPS = {Role.TRADER: TRADER_GROUP, Role.CLIENT: CLIENT_GROUP}

_UNSET = object()


def user_update_profile(
    *,
    user: User,
    first_name: str | object = _UNSET,
    last_name: str | object = _UNSET,
    email: str | object = _UNSET,
) -> User:
    """Change the given profile fields (the others stay as they are)."""
    changes = {
        name: value
        for name, value in (("first_name", first_name), ("last_name", last_name), ("email", email))
        if value is not _UNSET
    }
    if not changes:
        return user
    for name, value in changes.items():
        setattr(user, name, value)
    user.full_clean(exclude=["password"], validate_unique=False)
    with transaction.atomic():
        user.save(update_fields=list(changes))
    return user


def user_update(
    *,
    user: User,
    by: User,
    first_name: str | object = _UNSET,
    last_name: str | object = _UNSET,
    email: str | object = _UNSET,
    role: Role | object | None = _UNSET,
) -> User:
    """One API update of a user: profile fields and, by an operator only, the role, together."""
    if role is not _UNSET and role_of(by) is not Role.OPERATOR:
        raise PermissionDenied("Only an operator may change a role.")
    with transaction.atomic():
        user = user_update_profile(
            user=user, first_name=first_name, last_name=last_name, email=email
        )
        if role is not _UNSET and role != role_of(user):
            user = user_set_role(user=user, role=role, by=by)
    return user


def user_set_role(*, user: User, role: Role | None, by: User) -> User:
    """Make `user` an operator (staff), a trader or a client, or take every role away (None).

    Refused: changing one's own role (an operator could lock everyone out), and superusers,
    whose role is always operator (make or unmake them in the admin).
    """
    if user.pk == by.pk:
        raise Conflict("You cannot change your own role; ask another operator.")
    if user.is_superuser:
        raise Conflict(
            f"{user.username} is a superuser, always an operator; change that in the admin."
        )
    role = Role(role) if role else None
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        user.is_staff = role is Role.OPERATOR
        user.save(update_fields=["is_staff"])
        role_groups = Group.objects.filter(name__in=_ROLE_GROUPS.values())
        user.groups.remove(*role_groups)
        if role in _ROLE_GROUPS:
            user.groups.add(Group.objects.get_or_create(name=_ROLE_GROUPS[role])[0])
    # role_of caches group names on the object: hand back a fresh one.
    return User.objects.get(pk=user.pk)
