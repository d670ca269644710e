"""Start-up with bad settings: each typed reader stops it with a message naming the variable.

Settings are imported in a subprocess with a controlled environment (QB_IGNORE_DOTENV=1, so a
local .env cannot interfere), the way `manage.py` or daphne would meet them.
"""

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

BASE_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "QB_IGNORE_DOTENV": "1",
    "DATABASE_URL": "postgres://qb@localhost:5432/qb",
    "REDIS_URL": "redis://localhost:6379/0",
}
DB_PASSWORD = "s3cr3t-db-pass"
PRODUCTION_KEY = secrets.token_urlsafe(60)


def run_python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    """Runs `code` with BASE_ENV updated by `env` (a None value removes the variable)."""
    merged = {**BASE_ENV, **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env={key: value for key, value in merged.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_settings(**env: str | None) -> subprocess.CompletedProcess:
    return run_python("import qbsite.settings", **env)


def setting(name: str, **env: str | None) -> str:
    """The repr of one setting as the subprocess sees it."""
    result = run_python(f"import qbsite.settings as s; print(repr(s.{name}))", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def startup_error(**env: str | None) -> str:
    """The ImproperlyConfigured line that stopped start-up (and the whole stderr checked)."""
    result = load_settings(**env)
    assert result.returncode != 0, f"start-up did not fail with {env}"
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: "), result.stderr
    return last_line


def production_env(**overrides: str | None) -> dict[str, str | None]:
    return {
        "ENVIRONMENT": "production",
        "SECRET_KEY": PRODUCTION_KEY,
        "ALLOWED_HOSTS": "qb.example.com",
        **overrides,
    }


def test_the_base_environment_starts():
    # The failures below are then caused by the one variable each changes.
    assert load_settings().returncode == 0
    assert load_settings(**production_env()).returncode == 0


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DB_CONN_MAX_AGE", "ten", "is not a whole number"),
        ("MAX_CANDLES_PER_SYMBOL", "0", "must be at least 1"),
        ("DATA_RETENTION_DAYS", "-5", "must be at least 1"),
        ("SYSTEM_LOG_RETENTION_DAYS", "thirty", "is not a whole number"),
        ("CHANNEL_CAPACITY", "1.5", "is not a whole number"),
        ("DEBUG", "maybe", "is not a boolean"),
        ("QB_IGNORE_DOTENV", "sometimes", "is not a boolean"),
        ("REDIS_MAX_MEMORY", "150 parsecs", "is not a size"),
        ("POSTGRES_WORK_MEM", "4.5MB", "is not a size"),
        ("POSTGRES_SHARED_BUFFERS", "lots", "is not a size"),
        ("ENVIRONMENT", "staging", "is not one of: development, production, test"),
        ("KIS_ENV", "paper", "is not one of: real, virtual"),
        ("LOG_LEVEL", "verbose", "is not one of"),
        ("SYSTEM_LOG_LEVEL", "LOUD", "is not one of"),
        ("KIS_ACCOUNT", "1234-5678", "is not CANO-ACNT_PRDT_CD"),
        ("KIS_ACCOUNT", "12345678", "is not CANO-ACNT_PRDT_CD"),
        ("DATABASE_URL", "mysql://qb@localhost/qb", "must start with one of postgres://"),
        ("DATABASE_URL", "postgres://qb@localhost:99999/qb", "is not a valid URL"),
        ("DATABASE_URL", "postgres://qb@localhost:port/qb", "is not a valid URL"),
        ("REDIS_URL", "http://localhost:6379/0", "must start with one of redis://"),
        ("REDIS_URL", "redis://localhost:70000/0", "is not a valid URL"),
        ("REDIS_URL", "redis://localhost:6379/cache", "the Redis database must be a number"),
    ],
)
def test_a_bad_value_stops_startup_naming_variable_and_value(name, value, says):
    line = startup_error(**{name: value})
    assert name in line
    assert value in line
    assert says in line


def test_a_missing_required_url_is_named():
    result = load_settings(DATABASE_URL=None)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL is not set." in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://qb:{DB_PASSWORD}@localhost/qb",
        f"postgres://qb:{DB_PASSWORD}@localhost:99999/qb",
        f"postgres://qb:{DB_PASSWORD}@localhost:port/qb",
        f"postgres://qb:{DB_PASSWORD}@[::1/qb",
        f"postgres://qb:{DB_PASSWORD}@/",
    ],
)
def test_a_database_password_never_appears_in_the_error(url):
    result = load_settings(DATABASE_URL=url)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL" in result.stderr
    assert DB_PASSWORD not in result.stderr
    assert DB_PASSWORD not in result.stdout


def test_a_redis_password_never_appears_in_the_error():
    result = load_settings(REDIS_URL="redis://:r3dis-s3cret@localhost:6379/x")
    assert "ImproperlyConfigured: REDIS_URL" in result.stderr
    assert "redis://:***@localhost:6379/x" in result.stderr
    assert "r3dis-s3cret" not in result.stderr


# --- secrets from <NAME>_FILE --------------------------------------------------------------


def test_secrets_are_read_from_name_file(tmp_path):
    (tmp_path / "app_key").write_text("PSfile-app-key-0123456789\n")
    (tmp_path / "app_secret").write_text("file-app-secret-value")
    (tmp_path / "db_url").write_text(f"postgres://qb:{DB_PASSWORD}@db.internal:5433/qbprod\n")
    env = {
        "KIS_APP_KEY_FILE": str(tmp_path / "app_key"),
        "KIS_APP_SECRET_FILE": str(tmp_path / "app_secret"),
        "DATABASE_URL_FILE": str(tmp_path / "db_url"),
    }
    assert setting("KIS_APP_KEY", **env) == "'PSfile-app-key-0123456789'"
    assert setting("KIS_APP_SECRET", **env) == "'file-app-secret-value'"
    # The variable itself wins over the file...
    assert setting("DATABASES['default']['HOST']", **env) == "'localhost'"
    # ...and without it the file is read.
    database = "DATABASES['default']"
    assert setting(f"{database}['HOST']", DATABASE_URL=None, **env) == "'db.internal'"
    assert setting(f"{database}['PASSWORD']", DATABASE_URL=None, **env) == repr(DB_PASSWORD)


def test_production_secret_key_from_file(tmp_path):
    (tmp_path / "secret_key").write_text(PRODUCTION_KEY + "\n")
    env = production_env(SECRET_KEY=None, SECRET_KEY_FILE=str(tmp_path / "secret_key"))
    assert setting("SECRET_KEY", **env) == repr(PRODUCTION_KEY)


@pytest.mark.parametrize("name", ["KIS_APP_KEY", "KIS_APP_SECRET", "SECRET_KEY"])
def test_an_unreadable_secret_file_is_named(tmp_path, name):
    missing = tmp_path / "no-such-file"
    line = startup_error(**{f"{name}_FILE": str(missing)})
    assert f"{name}_FILE" in line
    assert str(missing) in line
    assert "cannot read the file" in line


def test_a_directory_as_secret_file_is_named(tmp_path):
    line = startup_error(KIS_APP_SECRET_FILE=str(tmp_path))
    assert "KIS_APP_SECRET_FILE" in line


# --- production refuses unsafe settings ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"DEBUG": "true"}, "DEBUG must be false"),
        ({"SECRET_KEY": None}, "SECRET_KEY (or SECRET_KEY_FILE) must be set"),
        ({"SECRET_KEY": ""}, "SECRET_KEY (or SECRET_KEY_FILE) must be set"),
        (
            {"SECRET_KEY": "qb-development-only-secret-key-never-use-in-production"},
            "SECRET_KEY (or SECRET_KEY_FILE) must be set",
        ),
        ({"SECRET_KEY": "too-short-a-key"}, "SECRET_KEY must be at least 50 characters"),
        ({"SECRET_KEY": "a" * 60}, "SECRET_KEY must be at least 50 characters"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must list"),
    ],
)
def test_production_refuses_unsafe_settings(overrides, named):
    line = startup_error(**production_env(**overrides))
    assert "ENVIRONMENT=production refuses to start" in line
    assert named in line


def test_production_names_every_problem_at_once():
    line = startup_error(**production_env(DEBUG="1", SECRET_KEY=None, ALLOWED_HOSTS=None))
    for named in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"):
        assert named in line


def test_production_never_echoes_a_short_secret_key():
    result = load_settings(**production_env(SECRET_KEY="my-short-secret"))
    assert result.returncode != 0
    assert "my-short-secret" not in result.stderr


def test_production_check_deploy_reports_nothing():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={**BASE_ENV, **production_env(), "DJANGO_SETTINGS_MODULE": "qbsite.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr
