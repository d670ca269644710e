"""docker-compose.dev.yml: valid against the compose specification, with the agreed settings."""

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE = BASE_DIR / "docker-compose.dev.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _check_jsonschema() -> str:
    # Installed beside this interpreter (requirements/dev.txt); PATH may not hold the venv.
    found = Path(sys.executable).with_name("check-jsonschema")
    return str(found) if found.exists() else shutil.which("check-jsonschema") or "check-jsonschema"


def test_compose_file_validates_against_the_compose_spec_offline():
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validation_catches_a_broken_file(tmp_path):
    # The schema check must be able to fail: a service with an unknown key is rejected.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    image: x\n    memory_limit_typo: 1G\n")
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def _flags(command: list[str]) -> dict[str, str]:
    """{'shared_buffers': '128MB', '--maxmemory': '150mb', ...} from a command list."""
    flags = {}
    for option, value in itertools.pairwise(command):
        if option == "-c":
            key, _, setting = value.partition("=")
            flags[key] = setting
        elif option.startswith("--"):
            flags[option] = value
    return flags


def test_timescaledb_service(compose):
    db = compose["services"]["timescaledb"]
    assert db["image"] == "timescale/timescaledb:latest-pg15"
    assert any(port.endswith("5432:5432") for port in db["ports"])
    flags = _flags(db["command"])
    assert flags["shared_buffers"] == "128MB"
    assert flags["work_mem"] == "4MB"
    assert flags["effective_cache_size"] == "168MB"
    assert db["deploy"]["resources"]["limits"]["memory"] == "300M"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in db["volumes"]}
    init = next(target for target in mounts if target.startswith("/docker-entrypoint-initdb.d/"))
    assert mounts[init] == "./scripts/init-db.sql"
    assert mounts["/var/lib/postgresql/data"] in compose["volumes"]  # a named volume


def test_init_script_creates_user_database_and_extension():
    sql = (BASE_DIR / "scripts" / "init-db.sql").read_text()
    assert "CREATE ROLE qb LOGIN" in sql
    assert "CREATE DATABASE qb OWNER qb" in sql
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb" in sql


def test_redis_service_never_evicts(compose):
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert any(port.endswith("6379:6379") for port in redis["ports"])
    flags = _flags(redis["command"])
    assert flags["--maxmemory"] == "150mb"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--appendonly"] == "yes"
    assert flags["--list-compress-depth"] == "1"
    assert flags["--list-max-listpack-size"] == "-1"
    assert "healthcheck" in redis


def test_admin_tools(compose):
    services = compose["services"]
    assert services["adminer"]["image"].startswith("adminer")
    assert any(port.endswith("8080:8080") for port in services["adminer"]["ports"])
    assert services["redis-commander"]["image"].startswith("rediscommander/redis-commander")
    assert any(port.endswith("8081:8081") for port in services["redis-commander"]["ports"])


def test_app_is_built_here_and_waits_for_healthy_stores(compose):
    web = compose["services"]["web"]
    assert web["build"] == "."
    assert (BASE_DIR / "Dockerfile").is_file()
    assert web["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert web["env_file"][0]["path"] == ".env"
    assert web["environment"]["DATABASE_URL"].startswith("postgres://qb:")
    assert "@timescaledb:5432/qb" in web["environment"]["DATABASE_URL"]
    assert web["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    # The web container serves only; the engines run in their own service.
    assert "--no-engines" in web["command"]
    assert compose["services"]["engines"]["command"] == ["python", "manage.py", "runengines"]
    assert "profiles" not in compose["services"]["engines"]


def test_dockerfile_runs_as_a_non_root_user():
    lines = [line.split() for line in (BASE_DIR / "Dockerfile").read_text().splitlines()]
    instructions = [words for words in lines if words and not words[0].startswith("#")]
    assert instructions[0][:2] == ["FROM", "python:3.11-slim"]
    assert any(
        words[:2] == ["RUN", "pip"] and "requirements/base.txt" in words for words in instructions
    )
    users = [words[1] for words in instructions if words[0] == "USER"]
    assert users and users[-1] not in {"root", "0"}
