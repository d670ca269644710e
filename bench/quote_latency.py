"""Latest-quote read latency: raw redis-py HGETALL (the baseline) vs GET /api/v1/quotes/<symbol>/.

    python bench/quote_latency.py [--requests 5000]

Targets (issue 3): Redis p99 < 1 ms, API p99 < 5 ms. The API is measured in the same run
through live daphne and uvicorn servers on a loopback port (one keep-alive HTTP/1.1 connection,
so the figure is the server's, not TCP set-up) — where the quote fast path
(marketdata/fastquote.py) answers, as the `X-QB-Path: fast` header shows — and in process
through Django's test client (Django's own request path and the DRF view, without the fast path).

Writes only what it owns and removes it at the end: the stock QBBNCH, its `market:QBBNCH`
quote, and the user `bench-quote` (a client, with a token).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
SYMBOL = "QBBNCH"
QUOTE = {
    "timestamp": "2024-05-02T00:05:07Z",
    "open": "70000",
    "high": "70500",
    "low": "69900",
    "close": "70200",
    "volume": "123456",
    "prev_close": "69800",
    "change": "400",
    "change_rate": "0.57",
    "upper_limit": "90700",
    "lower_limit": "48900",
}


def _figures(label: str, samples_ns: list[int]) -> None:
    ms = sorted(s / 1e6 for s in samples_ns)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:<34} n={len(ms):<6} p50={p50:.3f} ms  p99={p99:.3f} ms  max={ms[-1]:.3f} ms")


def _time_calls(call, count: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - start)
    return samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
    # The bench sends thousands of requests a second: the per-user API throttle would refuse
    # most of them. Same override for the server started below.
    os.environ["API_THROTTLE_USER"] = "100000000/min"
    # Measure the server as it runs in production, not with DEBUG's query log and error pages.
    os.environ["DEBUG"] = "false"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django_redis import get_redis_connection
    from rest_framework.authtoken.models import Token

    from marketdata.keys import quote_key
    from marketdata.models import Stock
    from marketdata.services import stock_upsert
    from qbsite.roles import CLIENT_GROUP

    raw = get_redis_connection("default")
    stock_upsert(symbol=SYMBOL, name="QB latency bench", market="KOSPI")
    raw.hset(quote_key(SYMBOL), mapping=QUOTE)
    user, _ = User.objects.get_or_create(username="bench-quote")
    user.groups.add(Group.objects.get_or_create(name=CLIENT_GROUP)[0])
    token, _ = Token.objects.get_or_create(user=user)
    path = f"/api/v1/quotes/{SYMBOL}/"
    headers = {"Authorization": f"Token {token.key}", "Host": "localhost"}

    try:
        where = settings.REDIS_URL.split("@")[-1]  # no password in the output
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, redis {where}")
        print(f"{args.requests} reads each after {args.warmup} warm-up reads")
        key = quote_key(SYMBOL)
        _figures(
            "redis-py HGETALL (baseline)",
            _time_calls(lambda: raw.hgetall(key), args.requests, args.warmup),
        )

        from marketdata.selectors import quote_latest

        _figures(
            "selector quote_latest()",
            _time_calls(lambda: quote_latest(symbol=SYMBOL), args.requests, args.warmup),
        )

        client = Client(HTTP_AUTHORIZATION=headers["Authorization"], HTTP_HOST="localhost")

        def in_process():
            response = client.get(path)
            assert response.status_code == 200, response.status_code

        _figures("API, Django test client", _time_calls(in_process, args.requests, args.warmup))

        # Two ASGI servers: daphne (Twisted; Channels' runserver, used by `make run`) and
        # uvicorn (asyncio, whose sockets set TCP_NODELAY).
        for name, argv in _servers().items():
            if _over_http(name, argv, path, headers, args) != 0:
                return 1
    finally:
        raw.delete(quote_key(SYMBOL))
        Stock.objects.filter(symbol=SYMBOL).delete()
        user.delete()
    return 0


def _servers() -> dict[str, list[str]]:
    app = "qbsite.asgi:application"
    return {
        "daphne": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", app],
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
            app,
        ],
    }


def _over_http(name, argv, path, headers, args) -> int:
    """Start one server on a free loopback port, time GETs on one keep-alive connection."""
    port = _free_port()
    argv = [part.replace("{port}", str(port)) for part in argv]
    server = subprocess.Popen(
        argv,
        cwd=BASE_DIR,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print(f"{name} did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        if response.status != 200:
            print(f"{name} answered {response.status}", file=sys.stderr)
            return 1
        path_taken = "fast path" if response.getheader("X-QB-Path") == "fast" else "Django"

        def over_http():
            conn.request("GET", path, headers=headers)
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200, reply.status

        _figures(
            f"API, {name} ({path_taken})",
            _time_calls(over_http, args.requests, args.warmup),
        )
        conn.close()
        return 0
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
