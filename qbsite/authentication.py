"""Token authentication that also loads the user's role groups, in one query.

The permission check (qbsite.roles.role_of) needs the user's group names on every request;
fetched here with the token and the user, the hot read endpoints (the latest quote) cost one
database query instead of two. Nothing is cached across requests: a revoked token or a
changed role applies to the very next request.
"""

from __future__ import annotations

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Q
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class RoleTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        model = self.get_model()
        token = (
            model.objects.select_related("user")
            .annotate(
                group_names=ArrayAgg(
                    "user__groups__name", filter=Q(user__groups__isnull=False), default=[]
                )
            )
            .filter(key=key)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        user._qb_group_names = set(token.group_names)
        return (user, token)
