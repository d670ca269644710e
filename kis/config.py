"""Every KIS Open API constant QB uses, in one place: hosts, paths, TR ids, limits, Redis keys.

KIS changes TR ids and limits from time to time (see /work/shared/reference/KIS.md): change
them here and nowhere else. `KISConfig.from_settings()` is the configuration the client, the
WebSocket feed and the broker are built with:

    config = KISConfig.from_settings()          # settings KIS_* (qbsite/settings.py)
    config.rest_url, config.ws_url              # KIS_REST_URL / KIS_WS_URL override the hosts
    config.tr_id("order_buy")                   # "TTTC0012U" (real) or "VTTC0012U" (virtual)
    config.rate_per_second                      # 18 real, 1 virtual, or KIS_RATE_LIMIT_PER_SECOND

Redis keys are all prefixed `kis:` and hold a hash of the app key, never the key itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

REAL = "real"
VIRTUAL = "virtual"
ENVIRONMENTS = (REAL, VIRTUAL)

# --- hosts -----------------------------------------------------------------------------------
REST_URLS = {
    REAL: "https://openapi.koreainvestment.com:9443",
    VIRTUAL: "https://openapivts.koreainvestment.com:29443",
}
WS_PATH = "/tryitout"  # the path the broker's samples use (plain ws://)
WS_URLS = {
    REAL: "ws://ops.koreainvestment.com:21000" + WS_PATH,
    VIRTUAL: "ws://ops.koreainvestment.com:31000" + WS_PATH,
}

# --- paths -----------------------------------------------------------------------------------
PATH_TOKEN = "/oauth2/tokenP"
PATH_APPROVAL = "/oauth2/Approval"
_STOCK = "/uapi/domestic-stock/v1"
PATH_PRICE = f"{_STOCK}/quotations/inquire-price"
PATH_DAILY_CANDLES = f"{_STOCK}/quotations/inquire-daily-itemchartprice"
PATH_MINUTE_CANDLES_TODAY = f"{_STOCK}/quotations/inquire-time-itemchartprice"
PATH_MINUTE_CANDLES_PAST = f"{_STOCK}/quotations/inquire-time-dailychartprice"
PATH_ORDER_CASH = f"{_STOCK}/trading/order-cash"
PATH_ORDER_REVISE_CANCEL = f"{_STOCK}/trading/order-rvsecncl"
PATH_CANCELLABLE_ORDERS = f"{_STOCK}/trading/inquire-psbl-rvsecncl"
PATH_BALANCE = f"{_STOCK}/trading/inquire-balance"
PATH_DAILY_FILLS = f"{_STOCK}/trading/inquire-daily-ccld"

# --- TR ids: name -> (real, virtual); None = KIS offers no such call in that environment ------
# Older order ids still seen in samples: TTTC0802U (buy) / TTTC0801U (sell), VTTC0802U /
# VTTC0801U; KIS moved to the ids below. Older daily-fill periods use CTSC9215R.
TR_IDS: dict[str, tuple[str | None, str | None]] = {
    "price": ("FHKST01010100", "FHKST01010100"),
    "daily_candles": ("FHKST03010100", "FHKST03010100"),
    "minute_candles_today": ("FHKST03010200", "FHKST03010200"),
    "minute_candles_past": ("FHKST03010230", "FHKST03010230"),
    "order_buy": ("TTTC0012U", "VTTC0012U"),
    "order_sell": ("TTTC0011U", "VTTC0011U"),
    "order_revise_cancel": ("TTTC0013U", "VTTC0013U"),
    "cancellable_orders": ("TTTC0084R", None),
    "balance": ("TTTC8434R", "VTTC8434R"),
    "daily_fills": ("TTTC0081R", "VTTC0081R"),
    # WebSocket streams (kis.ws): executed prices, and our own fill notices.
    "ws_trade": ("H0STCNT0", "H0STCNT0"),
    "ws_fill_notice": ("H0STCNI0", "H0STCNI9"),
}

# --- page sizes (rows per call, as KIS answers) ------------------------------------------------
DAILY_CANDLES_PER_CALL = 100
MINUTE_CANDLES_TODAY_PER_CALL = 30
MINUTE_CANDLES_PAST_PER_CALL = 120

# --- limits ------------------------------------------------------------------------------------
# Requests per second per account (KIS notice of 2026-04-20).
RATE_LIMITS = {REAL: 18, VIRTUAL: 1}
# The limiter's window is a little longer than KIS's second: a request admitted at the end of
# one window travels for a few milliseconds, and KIS counts it when it arrives.
RATE_WINDOW_SECONDS = 1.1
# A token is replaced this long before KIS's expiry (it lives ~24 h).
TOKEN_REFRESH_MARGIN_SECONDS = 600
# KIS's answer says nothing about an approval key's life; reissue well before a day.
APPROVAL_KEY_TTL_SECONDS = 12 * 3600
# How long one process may hold the issuance lock (an issuance is one HTTP call).
TOKEN_LOCK_SECONDS = 30
# Retries of EGW00201 (rate limited), 5xx and connection errors; backoff doubles from BASE.
MAX_RETRIES = 5
BACKOFF_BASE_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
TIMEOUT_SECONDS = 10.0

# --- message codes -------------------------------------------------------------------------------
MSG_RATE_LIMITED = "EGW00201"  # 초당 거래건수를 초과하였습니다
# The token is expired / invalid: drop the cached one and issue again (once).
MSG_TOKEN_EXPIRED = "EGW00123"
MSG_TOKEN_INVALID = "EGW00121"
TOKEN_MSG_CODES = frozenset({MSG_TOKEN_EXPIRED, MSG_TOKEN_INVALID})

# --- Redis keys (all `kis:`) -----------------------------------------------------------------
KEY_PREFIX = "kis:"


def app_key_id(app_key: str) -> str:
    """A short, stable, non-reversible name for an app key (for Redis keys and logs)."""
    return hashlib.sha256(app_key.encode()).hexdigest()[:16]


def token_key(env: str, app_key: str) -> str:
    return f"{KEY_PREFIX}token:{env}:{app_key_id(app_key)}"


def token_lock_key(env: str, app_key: str) -> str:
    return f"{KEY_PREFIX}token-lock:{env}:{app_key_id(app_key)}"


def approval_key_key(env: str, app_key: str) -> str:
    return f"{KEY_PREFIX}approval:{env}:{app_key_id(app_key)}"


def approval_lock_key(env: str, app_key: str) -> str:
    return f"{KEY_PREFIX}approval-lock:{env}:{app_key_id(app_key)}"


def rate_limit_key(env: str, account: str) -> str:
    """Per account (KIS limits per account); `account` is CANO, or the app key id without one.
    The key holds a hash of it: an account number is not for anyone who can list Redis keys."""
    return f"{KEY_PREFIX}ratelimit:{env}:{app_key_id(account)}"


@dataclass(frozen=True)
class KISConfig:
    """What a KIS client needs. Build it with from_settings(), or directly in tests.

    repr() never shows the app key, the secret or the account number.
    """

    env: str
    app_key: str = dataclasses.field(repr=False)
    app_secret: str = dataclasses.field(repr=False)
    rest_url: str = ""
    ws_url: str = ""
    cano: str = dataclasses.field(default="", repr=False)  # the account's 8 digits
    product_code: str = "01"  # ACNT_PRDT_CD
    hts_id: str = dataclasses.field(default="", repr=False)
    rate_per_second: int = 0
    token_refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS
    timeout: float = TIMEOUT_SECONDS
    max_retries: int = MAX_RETRIES

    def __post_init__(self):
        if self.env not in ENVIRONMENTS:
            raise ImproperlyConfigured(f"KIS_ENV={self.env!r} is not one of: real, virtual.")
        if not self.app_key:
            raise ImproperlyConfigured("KIS_APP_KEY is not set (the KIS developers portal).")
        if not self.app_secret:
            raise ImproperlyConfigured("KIS_APP_SECRET is not set (the KIS developers portal).")
        # Defaults from the environment's table when not given.
        if not self.rest_url:
            object.__setattr__(self, "rest_url", REST_URLS[self.env])
        if not self.ws_url:
            object.__setattr__(self, "ws_url", WS_URLS[self.env])
        object.__setattr__(self, "rest_url", self.rest_url.rstrip("/"))
        if not self.rate_per_second:
            object.__setattr__(self, "rate_per_second", RATE_LIMITS[self.env])
        if self.rate_per_second < 1:
            raise ImproperlyConfigured(
                f"KIS_RATE_LIMIT_PER_SECOND={self.rate_per_second} must be at least 1."
            )

    @classmethod
    def from_settings(cls, settings=None) -> KISConfig:
        """From Django settings (KIS_ENV, KIS_APP_KEY, KIS_APP_SECRET, KIS_ACCOUNT, KIS_HTS_ID,
        KIS_REST_URL, KIS_WS_URL, KIS_RATE_LIMIT_PER_SECOND, KIS_TOKEN_REFRESH_MARGIN_SECONDS).
        Raises ImproperlyConfigured naming the variable that is missing."""
        if settings is None:
            from django.conf import settings
        account = getattr(settings, "KIS_ACCOUNT", "") or ""
        cano, _, product = account.partition("-")
        return cls(
            env=settings.KIS_ENV,
            app_key=settings.KIS_APP_KEY,
            app_secret=settings.KIS_APP_SECRET,
            rest_url=getattr(settings, "KIS_REST_URL", None) or "",
            ws_url=getattr(settings, "KIS_WS_URL", None) or "",
            cano=cano,
            product_code=product or "01",
            hts_id=getattr(settings, "KIS_HTS_ID", "") or "",
            rate_per_second=getattr(settings, "KIS_RATE_LIMIT_PER_SECOND", None) or 0,
            token_refresh_margin=getattr(
                settings, "KIS_TOKEN_REFRESH_MARGIN_SECONDS", TOKEN_REFRESH_MARGIN_SECONDS
            ),
        )

    def tr_id(self, name: str) -> str:
        """The TR id of a call in this environment; ImproperlyConfigured for an unknown name,
        kis.errors.KISNotSupported when KIS has no such call in this environment."""
        try:
            real, virtual = TR_IDS[name]
        except KeyError:
            raise ImproperlyConfigured(f"No KIS TR id named {name!r} in kis.config.") from None
        tr_id = real if self.env == REAL else virtual
        if tr_id is None:
            from kis.errors import KISNotSupported

            raise KISNotSupported(f"KIS offers no {name} call for {self.env} accounts.")
        return tr_id

    def require_account(self) -> tuple[str, str]:
        """(CANO, ACNT_PRDT_CD) for account calls; ImproperlyConfigured naming KIS_ACCOUNT."""
        if not self.cano:
            raise ImproperlyConfigured(
                "KIS_ACCOUNT is not set (CANO-ACNT_PRDT_CD, e.g. 12345678-01): account calls"
                " (orders, balance, fills) need it."
            )
        return self.cano, self.product_code

    @property
    def limiter_key(self) -> str:
        return rate_limit_key(self.env, self.cano or app_key_id(self.app_key))

    @property
    def token_key(self) -> str:
        return token_key(self.env, self.app_key)

    @property
    def token_lock_key(self) -> str:
        return token_lock_key(self.env, self.app_key)

    @property
    def approval_key_key(self) -> str:
        return approval_key_key(self.env, self.app_key)

    @property
    def approval_lock_key(self) -> str:
        return approval_lock_key(self.env, self.app_key)
