"""Migrations own the schema: they are complete, and they apply forwards, backwards to zero and
forwards again on plain PostgreSQL (a throwaway database, migrated by `manage.py` subprocesses
as an operator would)."""

import contextlib
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import psycopg
from django.conf import settings
from psycopg.conninfo import make_conninfo

QB_TABLES = {
    "stocks_metadata",
    "market_data",
    "trades",
    "positions",
    "strategy_performance",
    "risk_metrics",
    "system_logs",
}
PLAIN_SERVER_LINE = "TimescaleDB is not available on this server: market_data stays a plain table"

UNAPPLY_ALL = """
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
for app in sorted(MigrationLoader(connection).migrated_apps):
    call_command("migrate", app, "zero", verbosity=0, interactive=False)
"""


def _conninfo(dbname: str) -> str:
    db = settings.DATABASES["default"]
    params = {
        "dbname": dbname,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


@contextlib.contextmanager
def throwaway_database(purpose: str):
    """Creates an empty database; yields (DATABASE_URL for it, libpq conninfo); drops it."""
    prefix = settings.DATABASES["default"]["TEST"]["NAME"] or "test_qb"
    name = f"{prefix}_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{name}").geturl()
        yield url, _conninfo(name)
    finally:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QB_IGNORE_DOTENV": "1"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def public_tables(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def applied_migrations(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0]


def test_makemigrations_finds_nothing_to_do():
    result = manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def test_migrations_apply_forwards_backwards_to_zero_and_forwards_again():
    with throwaway_database("migrations") as (url, conninfo):
        forwards = manage("migrate", "--no-input", database_url=url)
        assert forwards.returncode == 0, forwards.stdout + forwards.stderr
        assert forwards.stdout.count(PLAIN_SERVER_LINE) == 1
        assert public_tables(conninfo) >= QB_TABLES

        backwards = manage("shell", "-c", UNAPPLY_ALL, database_url=url)
        assert backwards.returncode == 0, backwards.stdout + backwards.stderr
        assert public_tables(conninfo) == {"django_migrations"}
        assert applied_migrations(conninfo) == 0

        again = manage("migrate", "--no-input", database_url=url)
        assert again.returncode == 0, again.stdout + again.stderr
        assert public_tables(conninfo) >= QB_TABLES
        check = manage("migrate", "--check", database_url=url)
        assert check.returncode == 0, check.stdout + check.stderr
