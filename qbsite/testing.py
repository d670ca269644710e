"""Helpers shared by the test suites (imported by tests only)."""

from __future__ import annotations

import socket

from psycopg.conninfo import make_conninfo

from qbsite.db import connection_params


def database_conninfo(**overrides) -> str:
    """libpq connection string for Django's (test) database, or another with overrides
    (e.g. port=<a closed port>, dbname=<one that does not exist>)."""
    params = connection_params(application_name="qb-tests")
    params.update(overrides)
    return make_conninfo(**params)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
