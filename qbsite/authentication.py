"""Token authentication that also loads the user's role groups, in one query.

The permission check (qbsite.roles.role_of) needs the user's group names on every request;
fetched here with the token and the user, the hot read endpoints (the latest quote) cost one
database query instead of two. The query is plain SQL: building the equivalent ORM query
(a join and an array aggregate) cost more CPU per request than the query itself. Nothing is
cached across requests: a revoked token or a changed role applies to the very next request.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


def _user_query(user_model) -> tuple[str, list[str]]:
    fields = [field.column for field in user_model._meta.concrete_fields]
    user_table = user_model._meta.db_table
    groups_table = user_model.groups.through._meta.db_table
    columns = ", ".join(f'u."{column}"' for column in fields)
    sql = (
        f"SELECT {columns},"
        " COALESCE(ARRAY(SELECT g.name FROM auth_group g"
        f" JOIN {groups_table} ug ON ug.group_id = g.id WHERE ug.user_id = u.id),"
        " '{}'::varchar[])"
        f" FROM authtoken_token t JOIN {user_table} u ON u.id = t.user_id WHERE t.key = %s"
    )
    return sql, [field.attname for field in user_model._meta.concrete_fields]


class RoleTokenAuthentication(TokenAuthentication):
    _query: tuple[str, list[str]] | None = None

    def authenticate_credentials(self, key):
        user_model = get_user_model()
        if RoleTokenAuthentication._query is None:
            RoleTokenAuthentication._query = _user_query(user_model)
        sql, names = RoleTokenAuthentication._query
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = user_model.from_db(connection.alias, names, row[:-1])
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        user._qb_group_names = set(row[-1])
        # The Token object is what TokenAuthentication gives as request.auth.
        return (user, self.get_model()(key=key, user=user))
