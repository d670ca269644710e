"""QB settings. Everything comes from the environment or `.env` (see `.env.example`).

A bad value stops start-up with ImproperlyConfigured naming the variable (qbsite/env.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from qbsite.env import (
    env_bool,
    env_choice,
    env_decimal,
    env_float,
    env_int,
    env_list,
    env_size,
    env_str,
    env_url,
    load_dotenv_file,
    redis_url_with_db,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

if not env_bool("QB_IGNORE_DOTENV", False):
    load_dotenv_file(BASE_DIR / ".env")

ENVIRONMENT = env_choice("ENVIRONMENT", ("development", "production", "test"), "development")
IS_PRODUCTION = ENVIRONMENT == "production"
IS_TEST = ENVIRONMENT == "test"

# --- Core --------------------------------------------------------------------------------
_DEV_SECRET_KEY = "qb-development-only-secret-key-never-use-in-production"
DEBUG = env_bool("DEBUG", ENVIRONMENT == "development")
SECRET_KEY = env_str("SECRET_KEY", None, secret=True)
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", [] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

if IS_PRODUCTION:
    problems = []
    if DEBUG:
        problems.append("DEBUG must be false")
    if not SECRET_KEY or SECRET_KEY == _DEV_SECRET_KEY:
        problems.append("SECRET_KEY (or SECRET_KEY_FILE) must be set to a secret value")
    elif len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        problems.append("SECRET_KEY must be at least 50 characters with 5 distinct ones")
    if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must list this site's host names (not empty, not *)")
    if problems:
        raise ImproperlyConfigured(
            "ENVIRONMENT=production refuses to start: " + "; ".join(problems) + "."
        )
elif not SECRET_KEY:
    SECRET_KEY = _DEV_SECRET_KEY

INSTALLED_APPS = [
    "daphne",
    "qbsite.apps.QBAdminConfig",  # django.contrib.admin with the QB site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "qbsite",
    "ops",
    "marketdata",
    "trading",
    "risk",
    "kis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "qbsite.urls"
ASGI_APPLICATION = "qbsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL --------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql", "timescale"))
try:
    _db = dj_database_url.parse(
        DATABASE_URL.replace("timescale://", "postgres://", 1),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0, min_value=0),
        conn_health_checks=True,
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL cannot be used: {exc}") from None
_db["ENGINE"] = "django.db.backends.postgresql"
_db.setdefault("OPTIONS", {})["application_name"] = env_str("DB_APPLICATION_NAME", "qb")
# A connection pool per process (psycopg_pool): under ASGI each request would otherwise open a
# new PostgreSQL connection (a backend process each time, ~20 ms); Django's docs advise a pool
# rather than persistent connections there. Small: one process rarely needs more than a few.
if env_bool("DB_POOL", True):
    if _db["CONN_MAX_AGE"]:
        raise ImproperlyConfigured(
            "DB_CONN_MAX_AGE must be 0 while DB_POOL is on (a pool keeps the connections)."
        )
    _db["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_MAX_SIZE", 4, min_value=1),
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 10, min_value=0.1),
    }
_db["TEST"] = {"NAME": env_str("DB_TEST_NAME", f"test_{_db.get('NAME') or 'qb'}")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, and the real-time buffer --------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
if IS_TEST:
    # Tests flush their Redis database: keep them off the one `make run` uses.
    REDIS_URL = redis_url_with_db(REDIS_URL, env_int("REDIS_TEST_DB", 15, min_value=0))

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Cache keys live beside the market-data keys (market:, candles:, ...): prefix them.
        "KEY_PREFIX": "cache",
        "TIMEOUT": 300,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
    }
}

# Channels' Redis layer delivers at most once (DESIGN.md): it carries notifications only.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": "asgi",
            # A notification older than this is stale; engines rebuild state from the database.
            "expiry": env_int("CHANNEL_EXPIRY_SECONDS", 30, min_value=1),
            # Bounded so a stalled consumer cannot eat the 20 MB event budget; a full channel
            # refuses sends (the sender logs it) instead of growing without limit.
            "capacity": env_int("CHANNEL_CAPACITY", 1000, min_value=10),
            # Engine channels (engine.<name>, members of the event groups) take bursts: every
            # 1m candle of the universe closes at the same second (2,500 candle_closed at once).
            "channel_capacity": {
                "engine.*": env_int("CHANNEL_ENGINE_CAPACITY", 20000, min_value=10)
            },
            # Group membership is renewed by each engine's heartbeat well within a day.
            "group_expiry": env_int("CHANNEL_GROUP_EXPIRY_SECONDS", 86400, min_value=60),
        },
    }
}

# --- Auth, sessions, i18n ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
# Stored in UTC; shown in Korea's time, where the market and its operators are.
TIME_ZONE = "Asia/Seoul"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))

# --- Security (production) ----------------------------------------------------------------
if IS_PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, min_value=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env_bool("SECURE_PROXY_SSL", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- REST API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "qbsite.authentication.RoleTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["qbsite.permissions.RolePermission"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "qbsite.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "qbsite.api_errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "qbsite.throttling.AnonThrottle",
        "qbsite.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("API_THROTTLE_ANON", "60/min"),
        "user": env_str("API_THROTTLE_USER", "6000/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "QB API",
    "DESCRIPTION": "QB trading back office: market data, trades, positions, risk, operations.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # One schema name per choice set shared by several fields (orders.status and
    # order_transitions.to_status; trades.status beside it).
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "trading.models.OrderStatus",
        "TradeStatusEnum": "trading.models.TradeStatus",
        # BUY / SELL: trades' and orders' side, signals' action.
        "SideEnum": "trading.models.Side",
        # ACTIVE / REDUCING / HALTED: the trading state and its changes' from / to.
        "TradingStateEnum": "risk.models.State",
    },
}

# --- QB domain settings -------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO")
SYSTEM_LOG_LEVEL = env_choice(
    "SYSTEM_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "WARNING"
)
SYSTEM_LOG_RETENTION_DAYS = env_int("SYSTEM_LOG_RETENTION_DAYS", 30, min_value=1)
MAX_CANDLES_PER_SYMBOL = env_int("MAX_CANDLES_PER_SYMBOL", 200, min_value=1)
DATA_RETENTION_DAYS = env_int("DATA_RETENTION_DAYS", 365, min_value=1)
REDIS_MAX_MEMORY = env_size("REDIS_MAX_MEMORY", "150MB")
POSTGRES_SHARED_BUFFERS = env_size("POSTGRES_SHARED_BUFFERS", "128MB")
POSTGRES_WORK_MEM = env_size("POSTGRES_WORK_MEM", "4MB")

# KRX rules (marketdata/krx.py). Commission per side; the calendar range is fixed so that
# answers never depend on the day the process started; one-off holidays the calendar lacks.
KRX_COMMISSION_RATE = env_decimal("KRX_COMMISSION_RATE", "0.00015", min_value=0, max_value="0.01")
KRX_CALENDAR_START = env_str("KRX_CALENDAR_START", "2010-01-04")
KRX_CALENDAR_END = env_str("KRX_CALENDAR_END", "2030-12-31")
KRX_EXTRA_HOLIDAYS = env_list("KRX_EXTRA_HOLIDAYS", [])

# Market-data engines (checked at start-up by marketdata/checks.py).
CANDLE_INTERVALS = env_list("CANDLE_INTERVALS", ["1m", "5m", "15m", "1h", "1d"])
CANDLE_CLOSE_GRACE_SECONDS = env_float("CANDLE_CLOSE_GRACE_SECONDS", 2, min_value=0)
COLLECTOR_FEED = env_str("COLLECTOR_FEED", "simulated")
COLLECTOR_SPEED = env_str("COLLECTOR_SPEED", "1")
COLLECTOR_SIM_SEED = env_int("COLLECTOR_SIM_SEED", None)
COLLECTOR_BATCH_MAX_TICKS = env_int("COLLECTOR_BATCH_MAX_TICKS", 20000, min_value=1)
COLLECTOR_EVENT_QUEUE_MAX = env_int("COLLECTOR_EVENT_QUEUE_MAX", 100000, min_value=1)
COLLECTOR_BATCH_MAX_MS = env_float("COLLECTOR_BATCH_MAX_MS", 20, min_value=0)
COLLECTOR_REJECT_LOG_INTERVAL_SECONDS = env_float(
    "COLLECTOR_REJECT_LOG_INTERVAL_SECONDS", 10, min_value=0
)
TICK_FUTURE_TOLERANCE_SECONDS = env_float("TICK_FUTURE_TOLERANCE_SECONDS", 5, min_value=0)
MARKET_EVENT_MIN_INTERVAL_MS = env_float("MARKET_EVENT_MIN_INTERVAL_MS", 250, min_value=0)
INDICATOR_INTERVAL = env_str("INDICATOR_INTERVAL", "1m")
INDICATOR_WARMUP_CANDLES = env_int("INDICATOR_WARMUP_CANDLES", 200, min_value=34)
MARKET_WS_SNAPSHOT_CANDLES = env_int("MARKET_WS_SNAPSHOT_CANDLES", 50, min_value=0)
KNOWN_SYMBOLS_CACHE_SECONDS = env_float("KNOWN_SYMBOLS_CACHE_SECONDS", 60, min_value=0)
# GET /api/v1/quotes/<symbol>/ answered on the event loop before Django (marketdata/fastquote.py).
QUOTE_FAST_PATH = env_bool("QUOTE_FAST_PATH", True)

# Archiver (marketdata/archiver.py): the candle stream into market_data.
ARCHIVER_BATCH_SIZE = env_int("ARCHIVER_BATCH_SIZE", 20, min_value=1)
ARCHIVER_OVERLAP = env_bool("ARCHIVER_OVERLAP", True)
ARCHIVER_BLOCK_MS = env_int("ARCHIVER_BLOCK_MS", 1000, min_value=1)
ARCHIVER_CLAIM_IDLE_MS = env_int("ARCHIVER_CLAIM_IDLE_MS", 60000, min_value=1000)
ARCHIVER_MAX_BACKOFF_SECONDS = env_float("ARCHIVER_MAX_BACKOFF_SECONDS", 30, min_value=0.1)
ARCHIVER_DEAD_MAXLEN = env_int("ARCHIVER_DEAD_MAXLEN", 100000, min_value=1)
ARCHIVER_CHECK_TICK = env_bool("ARCHIVER_CHECK_TICK", False)
ARCHIVER_DATABASE_URL = env_url(
    "ARCHIVER_DATABASE_URL", None, schemes=("postgres", "postgresql", "pgsql", "timescale")
)

# Trading core (trading/). The broker orders go to; the paper broker's starting cash (KRW),
# its slippage in ticks for market orders, and the largest share of an order it fills per
# quote (1 = whole orders; 0.5 = at most half the order per quote, the rest on later quotes).
TRADING_BROKER = env_choice("TRADING_BROKER", ("paper", "kis"), "paper")
PAPER_INITIAL_CASH = env_decimal("PAPER_INITIAL_CASH", "100000000", min_value=0)
PAPER_SLIPPAGE_TICKS = env_int("PAPER_SLIPPAGE_TICKS", 1, min_value=0)
PAPER_FILL_RATIO = env_decimal("PAPER_FILL_RATIO", "1", min_value="0.01", max_value=1)
# Orders from a strategy are sized from its allocation: each symbol gets allocation / symbols.
# An order is refused when the latest quote is older than this (the market moved on).
QUOTE_MAX_AGE_SECONDS = env_float("QUOTE_MAX_AGE_SECONDS", 300, min_value=0)
# Deny orders while KRX is closed (off by default: the simulated market trades at any hour).
TRADING_DENY_WHEN_CLOSED = env_bool("TRADING_DENY_WHEN_CLOSED", False)
# A signal older than this when the orders engine gets to it (after a restart) is SKIPPED.
SIGNAL_MAX_AGE_SECONDS = env_float("SIGNAL_MAX_AGE_SECONDS", 300, min_value=0)
# Engines' clocks: the strategy engine's reload check, the orders engine's sweep for work whose
# event was lost (and the age work must reach first), the portfolio engine's refresh of its
# open-position set and its end-of-day performance clock.
STRATEGY_RELOAD_SECONDS = env_float("STRATEGY_RELOAD_SECONDS", 5, min_value=0.1)
ORDERS_SWEEP_SECONDS = env_float("ORDERS_SWEEP_SECONDS", 10, min_value=0.1)
ORDERS_SWEEP_MIN_AGE_SECONDS = env_float("ORDERS_SWEEP_MIN_AGE_SECONDS", 5, min_value=0)
PORTFOLIO_REFRESH_SECONDS = env_float("PORTFOLIO_REFRESH_SECONDS", 60, min_value=0.1)
PORTFOLIO_CLOCK_SECONDS = env_float("PORTFOLIO_CLOCK_SECONDS", 30, min_value=0.1)

# Engines runtime (qbsite/engines.py).
HEARTBEAT_SECONDS = env_float("HEARTBEAT_SECONDS", 5, min_value=0.1)
ENGINE_STOP_TIMEOUT_SECONDS = env_float("ENGINE_STOP_TIMEOUT_SECONDS", 10, min_value=0)
ENGINE_BACKOFF_INITIAL_SECONDS = env_float("ENGINE_BACKOFF_INITIAL_SECONDS", 0.5, min_value=0.01)
ENGINE_BACKOFF_MAX_SECONDS = env_float("ENGINE_BACKOFF_MAX_SECONDS", 30, min_value=0.01)

# KIS Open API (the broker). Secrets: from the environment or <NAME>_FILE; never logged.
KIS_ENV = env_choice("KIS_ENV", ("real", "virtual"), "virtual")
KIS_APP_KEY = env_str("KIS_APP_KEY", "", secret=True)
KIS_APP_SECRET = env_str("KIS_APP_SECRET", "", secret=True)
KIS_ACCOUNT = env_str("KIS_ACCOUNT", "")
if KIS_ACCOUNT and not re.fullmatch(r"\d{8}-\d{2}", KIS_ACCOUNT):
    raise ImproperlyConfigured(
        f"KIS_ACCOUNT={KIS_ACCOUNT!r} is not CANO-ACNT_PRDT_CD (8 digits, '-', 2 digits)."
    )
KIS_HTS_ID = env_str("KIS_HTS_ID", "")
# Overrides of the environment's hosts (a proxy, or the fake KIS server in tests) and of its
# per-second request limit (18 real, 1 virtual: kis.config.RATE_LIMITS); the token is replaced
# this many seconds before KIS's expiry.
KIS_REST_URL = env_url("KIS_REST_URL", None, schemes=("http", "https"), secret=False)
KIS_WS_URL = env_url("KIS_WS_URL", None, schemes=("ws", "wss"), secret=False)
KIS_RATE_LIMIT_PER_SECOND = env_int("KIS_RATE_LIMIT_PER_SECOND", None, min_value=1)
KIS_TOKEN_REFRESH_MARGIN_SECONDS = env_int("KIS_TOKEN_REFRESH_MARGIN_SECONDS", 600, min_value=0)
# The symbols the KIS WebSocket feed subscribes to (COLLECTOR_FEED=kis): 41 at most in all
# (one session per app key), fill notices included when the KIS broker shares the session.
KIS_FEED_SYMBOLS = env_list("KIS_FEED_SYMBOLS", [])

# Risk engine (risk/engines.py): the clock of its limit checks, how often one symbol's quotes
# are checked against the stop-loss / take-profit / trailing stop, how long before an exit
# that did not go through is tried again, and the history behind VaR / Sharpe / beta and
# the drawdown.
RISK_CHECK_SECONDS = env_float("RISK_CHECK_SECONDS", 5, min_value=0.1)
RISK_QUOTE_MIN_INTERVAL_SECONDS = env_float("RISK_QUOTE_MIN_INTERVAL_SECONDS", 0.5, min_value=0)
RISK_EXIT_RETRY_SECONDS = env_float("RISK_EXIT_RETRY_SECONDS", 30, min_value=0)
RISK_LOOKBACK_DAYS = env_int("RISK_LOOKBACK_DAYS", 365, min_value=20)
RISK_DRAWDOWN_DAYS = env_int("RISK_DRAWDOWN_DAYS", 30, min_value=1)

# --- Logging: console, plus system_logs for WARNING and above (ops.logging) ----------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "ops.logging.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        },
        "system_logs": {
            "class": "ops.logging.SystemLogHandler",
            "level": SYSTEM_LOG_LEVEL,
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console", "system_logs"], "level": LOG_LEVEL},
    "loggers": {
        # Never feed the database's own log lines back into the database.
        "django.db.backends": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "ops.logging": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
