"""Dedicated psycopg connections, beside Django's thread-bound ones.

The system_logs writer thread and the archiver write on connections of their own, so that
their commits never mix with a request's transaction (or a test's). Both take the same
parameters from settings.DATABASES (or a URL of their own) from here.
"""

from __future__ import annotations

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
