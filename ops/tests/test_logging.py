"""system_logs handler and secret redaction, against the real test database.

The handler writes on its own connection, outside the test's transaction, so these tests use
django_db(transaction=True) and read committed rows (through the ORM or a raw connection).
"""

import inspect
import io
import logging
import os
import threading
import uuid
from urllib.parse import quote

import psycopg
import pytest

from ops.logging import TABLE, RedactSecretsFilter, SystemLogHandler, level_name
from ops.models import SystemLog
from qbsite.testing import closed_port
from qbsite.testing import database_conninfo as conninfo

# Only the tests that read system_logs need the (slower) transactional database.
writes = pytest.mark.django_db(transaction=True)


@pytest.fixture
def raw():
    """A plain autocommit connection to the test database, as another process would see it."""
    with psycopg.connect(conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_handler():
    """make_handler(**options) -> (handler, logger): a handler on its own logger."""
    made = []

    def make(**options):
        options.setdefault("database_url", conninfo())
        handler = SystemLogHandler(**options)
        logger = logging.getLogger(f"qb.tests.syslog.{uuid.uuid4().hex[:12]}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((handler, logger))
        return handler, logger

    yield make
    for handler, logger in made:
        logger.removeHandler(handler)
        handler.close()


def configured_handler() -> SystemLogHandler:
    found = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert len(found) == 1, "settings.LOGGING puts one SystemLogHandler on the root logger"
    return found[0]


def rows(component: str) -> list[SystemLog]:
    return list(SystemLog.objects.filter(component=component).order_by("id"))


def test_table_name_is_the_models():
    assert SystemLog._meta.db_table == TABLE


@pytest.mark.parametrize(
    ("levelno", "name"),
    [(5, "DEBUG"), (10, "DEBUG"), (25, "INFO"), (30, "WARNING"), (45, "ERROR"), (60, "CRITICAL")],
)
def test_any_level_number_maps_to_a_stored_level(levelno, name):
    assert level_name(levelno) == name


# --- the configured handler (settings.LOGGING) -----------------------------------------------


@writes
def test_a_warning_reaches_system_logs_with_its_metadata():
    handler = configured_handler()
    assert handler.level == logging.WARNING  # SYSTEM_LOG_LEVEL's default
    component = f"qb.tests.configured.{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(component)
    extra = {"metadata": {"bar": 3}}
    try:
        raise ValueError("price must be positive")
    except ValueError:
        logger.warning("rejected candle for %s", "005930", exc_info=True, extra=extra)
        line = inspect.currentframe().f_lineno - 1
    assert handler.flush(timeout=30)

    [row] = rows(component)
    assert row.level == "WARNING"
    assert row.message == "rejected candle for 005930"
    assert row.timestamp.tzinfo is not None
    meta = row.metadata
    assert meta["bar"] == 3
    assert meta["module"] == "test_logging"
    assert meta["func"] == "test_a_warning_reaches_system_logs_with_its_metadata"
    assert meta["line"] == line
    assert meta["process"] == os.getpid()
    assert meta["thread"] == threading.current_thread().name
    assert "ValueError: price must be positive" in meta["exception"]


@writes
def test_info_is_not_written_at_the_default_level():
    handler = configured_handler()
    component = f"qb.tests.configured.{uuid.uuid4().hex[:8]}"
    logger = logging.getLogger(component)
    logger.info("routine detail")
    logger.error("a real problem")  # written, so the flush below did reach the database
    assert handler.flush(timeout=30)
    assert [(r.level, r.message) for r in rows(component)] == [("ERROR", "a real problem")]


@writes
def test_client_errors_of_django_request_are_not_written_but_server_errors_are():
    handler = configured_handler()
    marker = uuid.uuid4().hex
    request_logger = logging.getLogger("django.request")
    request_logger.warning("Not Found: /api/v1/%s", marker)
    request_logger.error("Internal Server Error: /api/v1/%s", marker)
    assert handler.flush(timeout=30)
    found = SystemLog.objects.filter(component="django.request", message__contains=marker)
    assert [r.level for r in found] == ["ERROR"]


# --- batching, never blocking, the database down --------------------------------------------


@writes
def test_a_burst_from_many_threads_is_written_in_batches_and_never_waits(make_handler, raw):
    handler, logger = make_handler(batch_size=500)
    threads_count, per_thread = 8, 1250
    total = threads_count * per_thread

    def produce(n):
        for i in range(per_thread):
            logger.warning("burst %s-%s", n, i)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(threads_count)]
    # While this lock is held no row can be inserted: every caller must still return.
    with raw.transaction():
        raw.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0

    assert handler.flush(timeout=120)
    component = logger.name
    count, transactions = raw.execute(
        f"SELECT count(*), count(DISTINCT xmin::text) FROM {TABLE} WHERE component = %s",
        [component],
    ).fetchone()
    assert count == total
    # Each batch is one INSERT in one transaction: far fewer than one per record.
    assert transactions < total / 10
    stats = handler.stats()
    assert stats["written"] == total
    assert stats["dropped"] == 0
    assert stats["batches"] < total / 10


@writes
@pytest.mark.parametrize("outage", ["closed port", "missing database", "no table yet"])
def test_while_the_database_is_down_callers_go_on_and_the_backlog_is_written_later(
    make_handler, raw, capfd, caplog, outage
):
    if outage == "closed port":
        bad = conninfo(host="127.0.0.1", port=str(closed_port()))
    elif outage == "missing database":
        bad = conninfo(dbname=f"qb_missing_{uuid.uuid4().hex[:8]}")
    else:  # a database that is not migrated (yet): the records wait, they are not lost
        bad = conninfo(dbname="postgres")
    handler, logger = make_handler(database_url=bad)
    caplog.set_level(logging.DEBUG)

    for i in range(50):
        logger.warning("while down %s", i)
    assert handler.flush(timeout=30) is False
    for i in range(50, 100):
        logger.error("still down %s", i)
    assert handler.flush(timeout=30) is False

    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "system_logs" in line]
    assert len(said) == 1, err
    assert "database unavailable" in said[0]
    # It said so on stderr only: nothing went through logging (that would recurse).
    assert caplog.records == []
    assert raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0

    handler.database_url = conninfo()
    assert handler.flush(timeout=30) is True
    messages = [r.message for r in rows(logger.name)]
    assert messages == [f"while down {i}" for i in range(50)] + [
        f"still down {i}" for i in range(50, 100)
    ]
    err = capfd.readouterr().err
    assert "database unavailable" not in err
    assert "database is back" in err


@writes
def test_the_backlog_is_bounded_and_keeps_the_newest(make_handler):
    bad = conninfo(host="127.0.0.1", port=str(closed_port()))
    # A long flush_interval: the writer takes a batch only when full or asked to flush.
    handler, logger = make_handler(database_url=bad, batch_size=10, capacity=20, flush_interval=600)
    for i in range(10):
        logger.warning("m%s", i)
    assert handler.flush(timeout=30) is False  # these 10 are now the batch being retried
    for i in range(10, 40):
        logger.warning("m%s", i)  # the buffer keeps the newest 20 of these 30
    assert handler.stats()["dropped"] == 10

    handler.database_url = conninfo()
    assert handler.flush(timeout=30)
    kept = [r.message for r in rows(logger.name)]
    assert kept == [f"m{i}" for i in range(10)] + [f"m{i}" for i in range(20, 40)]


# --- no recursion ---------------------------------------------------------------------------


@writes
def test_its_own_and_the_database_loggers_are_never_written(make_handler):
    handler, logger = make_handler()
    for name in ("ops.logging", "django.db.backends", "django.db.backends.schema", "psycopg"):
        record = logging.getLogger(name).makeRecord(
            name, logging.ERROR, __file__, 1, "from %s", (name,), None
        )
        handler.handle(record)
    logger.error("the control record")
    assert handler.flush(timeout=30)
    assert list(SystemLog.objects.values_list("message", flat=True)) == ["the control record"]


@writes
def test_an_argument_that_logs_while_formatted_does_not_recurse(make_handler):
    handler, logger = make_handler()

    class Noisy:
        def __str__(self):
            # Without a guard this would re-enter the handler, format itself, and so on.
            logger.warning("formatting %s", self)
            return "noisy"

    logger.warning("value %s", Noisy())
    assert handler.flush(timeout=30)
    assert [r.message for r in rows(logger.name)] == ["value noisy"]


@writes
def test_a_forked_child_writes_with_its_own_thread_and_connection(make_handler):
    handler, logger = make_handler()
    logger.warning("parent before fork")
    assert handler.flush(timeout=30)

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            logger.warning("from the child")
            code = 0 if handler.flush(timeout=30) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    logger.warning("parent after fork")  # the parent's handler is unharmed
    assert handler.flush(timeout=30)
    found = {r.message: r.metadata["process"] for r in rows(logger.name)}
    assert found == {
        "parent before fork": os.getpid(),
        "from the child": pid,
        "parent after fork": os.getpid(),
    }


@writes
def test_text_postgresql_cannot_store_is_stored_with_replacements(make_handler):
    handler, logger = make_handler()
    logger.warning("NUL \x00 here")
    logger.warning("undecodable file name %s", b"caf\xe9.csv".decode("utf-8", "surrogateescape"))
    logger.warning("odd metadata", extra={"metadata": {"nul": "a\x00b", "ratio": float("nan")}})
    assert handler.flush(timeout=30)
    stored = [
        (r.message, r.metadata.get("nul"), r.metadata.get("ratio")) for r in rows(logger.name)
    ]
    assert stored == [
        ("NUL \ufffd here", None, None),
        ("undecodable file name caf?.csv", None, None),
        ("odd metadata", "a\ufffdb", "nan"),
    ]
    assert handler.stats()["discarded"] == 0


# --- secrets never reach a log line ----------------------------------------------------------

KIS_KEY = "PSkisAppKey0123456789abcdefXYZ"
KIS_SECRET = "kisAppSecret+with/odd=chars0123456789"


@pytest.fixture
def kis_secrets(settings):
    settings.KIS_APP_KEY = KIS_KEY
    settings.KIS_APP_SECRET = KIS_SECRET
    settings.DATABASE_URL = "postgres://qb:db-pass-4567@db.internal/qb"
    settings.REDIS_URL = "redis://:redis-pass-890@cache.internal:6379/0"


@pytest.fixture
def captured():
    """(logger, stream): a real logger with a stream handler and the redaction filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger(f"qb.tests.redact.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_configured_secrets_are_replaced_in_message_args_and_exceptions(kis_secrets, captured):
    logger, stream = captured
    logger.info("token request: %s / %s", KIS_KEY, KIS_SECRET)
    logger.info("url https://x/oauth?key=" + quote(KIS_SECRET, safe=""))
    logger.info("dsn %s and %s", "db-pass-4567", "redis-pass-890")
    try:
        raise RuntimeError(f"KIS said no to {KIS_KEY}")
    except RuntimeError:
        logger.exception("call failed")
    logger.info("%(key)s as a mapping", {"key": KIS_KEY})
    out = stream.getvalue()
    for secret in (KIS_KEY, KIS_SECRET, quote(KIS_SECRET, safe=""), "db-pass-4567"):
        assert secret not in out
    assert "redis-pass-890" not in out
    assert out.count("***") >= 7
    assert "token request: *** / ***" in out
    assert "RuntimeError: KIS said no to ***" in out


@pytest.mark.parametrize(
    ("text", "secrets", "kept"),
    [
        (
            '{"grant_type": "client_credentials", "appkey": "abc123", "appsecret": "xyz789"}',
            ["abc123", "xyz789"],
            ['"grant_type": "client_credentials"', '"appkey": "***"'],
        ),
        (
            "GET /uapi/quotations?appkey=abc123&appsecret=xyz789&fid_input_iscd=005930",
            ["abc123", "xyz789"],
            ["appkey=***&appsecret=***&fid_input_iscd=005930"],
        ),
        (
            "headers: authorization: Bearer eyJhbGciOi.payload.sig, appkey: abc123",
            ["eyJhbGciOi", "abc123"],
            ["authorization: Bearer ***", "appkey: ***"],
        ),
        (
            "{'access_token': 'eyJ0eXAiOiJKV1Q', 'token_type': 'Bearer', 'expires_in': 86400}",
            ["eyJ0eXAiOiJKV1Q"],
            ["'token_type': 'Bearer'", "'expires_in': 86400"],
        ),
        ('{"approval_key":"a1b2c3d4-e5f6"}', ["a1b2c3d4"], ['"approval_key":"***"']),
        ("secretkey=zzz999 password=hunter2", ["zzz999", "hunter2"], ["secretkey=***"]),
        ("X-App-Secret: qqq111", ["qqq111"], ["X-App-Secret: ***"]),
    ],
)
def test_secret_patterns_are_replaced(captured, text, secrets, kept):
    logger, stream = captured
    logger.warning("KIS: %s", text)
    out = stream.getvalue()
    for secret in secrets:
        assert secret not in out
    for fragment in kept:
        assert fragment in out


def test_metadata_is_redacted_too():
    extra = {"metadata": {"headers": {"Authorization": "Bearer tok9"}, "n": 1}}
    record = logging.getLogger("qb.tests").makeRecord(
        "qb.tests", logging.WARNING, __file__, 1, "request", (), None, extra=extra
    )
    assert RedactSecretsFilter().filter(record) is True
    assert record.metadata == {"headers": {"Authorization": "***"}, "n": 1}


@writes
def test_the_configured_handlers_redact(kis_secrets):
    console = next(h for h in logging.getLogger().handlers if h.name == "console")
    stream = io.StringIO()
    previous = console.setStream(stream)
    component = f"qb.tests.configured.{uuid.uuid4().hex[:8]}"
    try:
        logging.getLogger(component).warning("login with appkey=%s secret %s", KIS_KEY, KIS_SECRET)
    finally:
        console.setStream(previous)
    assert configured_handler().flush(timeout=30)
    [row] = rows(component)
    for text in (stream.getvalue(), row.message):
        assert KIS_KEY not in text
        assert KIS_SECRET not in text
        assert "login with appkey=*** secret ***" in text


def test_the_kis_account_number_is_replaced(settings, captured):
    settings.KIS_ACCOUNT = "50123456-01"
    logger, stream = captured
    logger.info("GET inquire-balance?CTX_AREA_FK100=50123456%%5E01%%5E  page 2")
    logger.info("account %s", "50123456")
    assert "50123456" not in stream.getvalue()
