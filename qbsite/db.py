"""Dedicated psycopg connections, beside Django's thread-bound ones.

The system_logs writer thread and the archiver write on connections of their own, so that
their commits never mix with a request's transaction (or a test's). Both take the same
parameters from settings.DATABASES (or a URL of their own) from here.
"""

from __future__ import annotations

import re
import weakref

import psycopg

# OPTIONS that Django's backend understands and libpq does not.
_DJANGO_ONLY_OPTIONS = {
    "isolation_level",
    "server_side_binding",
    "pool",
    "assume_role",
    "cursor_factory",
    "application_name",
}


def connection_params(database_url: str | None = None, *, application_name: str) -> dict:
    """psycopg.connect() keyword arguments for `database_url`, or for Django's database."""
    if database_url:
        if database_url.startswith("timescale://"):
            database_url = "postgresql://" + database_url[len("timescale://") :]
        return {"conninfo": database_url, "application_name": application_name}
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {
        key: value
        for key, value in (db.get("OPTIONS") or {}).items()
        if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, str | int)
    }
    params.update(
        dbname=db.get("NAME"),
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or None,
        port=str(db["PORT"]) if db.get("PORT") else None,
        application_name=application_name,
    )
    return {key: value for key, value in params.items() if value is not None}


def connect(
    database_url: str | None = None,
    *,
    application_name: str,
    connect_timeout: int = 5,
    autocommit: bool = True,
    **options,
) -> psycopg.Connection:
    """A new psycopg connection (autocommit by default: callers open `conn.transaction()`)."""
    return psycopg.connect(
        **connection_params(database_url, application_name=application_name),
        connect_timeout=connect_timeout,
        autocommit=autocommit,
        **options,
    )


class PreparedStatement:
    """A statement PREPAREd once per database connection, then EXECUTEd by name.

    Django's psycopg cursors bind parameters client side and never prepare, so PostgreSQL
    plans every statement again; for a statement of a dozen subqueries on the order path
    (trading.oms's pre-trade figures) the planning cost more than the execution. Written with
    %(name)s placeholders like any Django query; `types` gives each name's SQL type, in the
    order of the PREPARE's parameters. A prepared statement outlives a rolled-back transaction
    and lives as long as its connection, which is tracked here by the psycopg connection object
    (a new or pooled connection prepares again).
    """

    def __init__(self, name: str, sql: str, types: dict[str, str]) -> None:
        self.name = name
        self.order = list(types)
        index = {key: n for n, key in enumerate(self.order, start=1)}
        used = set(re.findall(r"%\((\w+)\)s", sql))
        if used != set(index):
            raise ValueError(f"{name}: parameters {sorted(used)} != types {sorted(index)}")
        positional = re.sub(r"%\((\w+)\)s", lambda m: f"${index[m.group(1)]}", sql)
        self.prepare_sql = f"PREPARE {name} ({', '.join(types.values())}) AS {positional}"
        self.execute_sql = f"EXECUTE {name} ({', '.join(['%s'] * len(self.order))})"
        self._ready: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def execute(self, cursor, params: dict) -> None:
        """Run it on a Django cursor with `params` (a dict by name); fetch from the cursor."""
        raw = cursor.db.connection
        if raw not in self._ready:
            cursor.execute(self.prepare_sql)
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            self._ready[raw] = True
        cursor.execute(self.execute_sql, [params[key] for key in self.order])
