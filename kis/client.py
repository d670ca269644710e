"""KISClient: the async REST client of the KIS Open API (httpx), shared by the KIS broker,
`manage.py kis_check` and `manage.py backfill --source kis`.

    async with KISClient(KISConfig.from_settings(), redis=redis.asyncio.Redis(...)) as kis:
        quote = await kis.current_price("005930")          # Quote, Decimal prices
        candles = await kis.daily_candles("005930", start, end)
        ack = await kis.order_cash("buy", "005930", 10, Decimal(71000))   # None = market
        await kis.order_cancel(ack.org_no, ack.order_no)
        balance = await kis.balance()

Every call goes through `request()`, which
- adds the headers KIS wants (authorization with the shared token from kis.token, appkey,
  appsecret, tr_id, custtype P, tr_cont);
- waits on the shared per-account rate limiter (kis.ratelimit) before each attempt;
- retries, with a bounded exponential backoff (config.max_retries): EGW00201 (rate limited),
  and for reads also 5xx answers and lost connections. An order (a POST) is retried only
  when KIS surely did not take it: EGW00201, or a connection that never opened; a timeout or
  a 5xx after sending might have placed it, so that raises KISUnavailable for the caller to
  reconcile (cancellable_orders / daily_fills);
- issues a new token once when KIS says the token expired (EGW00123 / EGW00121);
- raises KISError (msg_cd, msg1, http_status, tr_id) when rt_cd != "0";
- returns KISResponse(body, tr_cont).
`pages()` follows tr_cont (M / F: more, send N) and CTX_AREA_FK100 / NK100.

Log lines (logger "kis.client", DEBUG per request, WARNING per retry) carry the path, TR id
and masked parameters: never the app key, secret, token or account number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import httpx

from kis import config as kc
from kis.errors import KISAuthError, KISError, KISRateLimited, KISUnavailable
from kis.ratelimit import RateLimiter
from kis.token import TokenStore
from qbsite.exceptions import InvalidInput

logger = logging.getLogger("kis.client")

KST = dt.timezone(dt.timedelta(hours=9), "KST")
MORE = ("M", "F")  # response tr_cont: more pages follow
NEXT = "N"  # request tr_cont: the next page
# Parameters / body keys that name the account: masked in logs. KIS's paging context
# (ctx_area_fk100, sent back as CTX_AREA_FK100) starts with the account number.
_ACCOUNT_KEYS = {"CANO", "CTX_AREA_FK100", "CTX_AREA_NK100"}
_CTX_KEYS = ("CTX_AREA_FK100", "CTX_AREA_NK100")
SIDES = ("buy", "sell")


# --- typed answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KISResponse:
    body: dict
    tr_cont: str = ""

    @property
    def has_more(self) -> bool:
        return self.tr_cont in MORE


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: Decimal
    change: Decimal
    change_rate: Decimal  # percent
    open: Decimal
    high: Decimal
    low: Decimal
    volume: int
    upper_limit: Decimal
    lower_limit: Decimal
    base_price: Decimal
    received_at: dt.datetime  # aware UTC: when the answer came (KIS sends no time)


@dataclass(frozen=True)
class Candle:
    symbol: str
    interval: str  # "1d" / "1m"
    time: dt.datetime  # aware: the candle's open (00:00 KST for days)
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def row(self) -> tuple:
        """(symbol, interval, time, open, high, low, close, volume): marketdata.copy's Row."""
        return (
            self.symbol,
            self.interval,
            self.time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
        )


@dataclass(frozen=True)
class OrderAck:
    org_no: str  # KRX_FWDG_ORD_ORGNO
    order_no: str  # ODNO
    time: dt.datetime | None  # ORD_TMD today, aware


@dataclass(frozen=True)
class OpenOrder:
    order_no: str
    original_order_no: str
    org_no: str
    symbol: str
    side: str
    quantity: int
    price: Decimal
    filled: int
    cancellable: int
    time: dt.datetime | None


@dataclass(frozen=True)
class OrderFills:
    """One order's fills on a day, as inquire-daily-ccld reports them."""

    date: dt.date
    order_no: str
    original_order_no: str
    org_no: str
    symbol: str
    side: str
    quantity: int
    price: Decimal
    filled: int
    average_price: Decimal
    filled_amount: Decimal
    remaining: int
    cancelled: bool
    time: dt.datetime | None


@dataclass(frozen=True)
class Position:
    symbol: str
    name: str
    quantity: int
    sellable: int
    average_price: Decimal
    price: Decimal
    value: Decimal
    profit: Decimal


@dataclass(frozen=True)
class Balance:
    positions: list[Position] = field(default_factory=list)
    cash: Decimal = Decimal(0)  # dnca_tot_amt: deposit
    cash_d2: Decimal = Decimal(0)  # prvs_rcdl_excc_amt: cash after settlement (D+2)
    total_value: Decimal = Decimal(0)  # tot_evlu_amt
    net_assets: Decimal = Decimal(0)  # nass_amt


# --- helpers ---------------------------------------------------------------------------------


def _dec(value, name: str = "value") -> Decimal:
    try:
        return Decimal(str(value).strip() or "0")
    except InvalidOperation:
        raise KISError(f"KIS answer: {name} {value!r} is not a number.") from None


def _int(value, name: str = "value") -> int:
    number = _dec(value, name)
    return int(number)


def _kst_time(day: dt.date, hhmmss: str) -> dt.datetime | None:
    hhmmss = (hhmmss or "").strip()
    if len(hhmmss) != 6 or not hhmmss.isdigit():
        return None
    return dt.datetime.combine(
        day,
        dt.time(int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:])),
        tzinfo=KST,
    )


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def _side(code: str) -> str:
    return {"01": "sell", "02": "buy"}.get(code, code)


def _order_row(row: dict) -> dict:
    """The fields an order row of KIS's order inquiries (open orders, daily fills) shares."""
    return {
        "order_no": row["odno"],
        "original_order_no": row.get("orgn_odno", ""),
        "org_no": row.get("ord_gno_brno", ""),
        "symbol": row.get("pdno", ""),
        "side": _side(row.get("sll_buy_dvsn_cd", "")),
        "quantity": _int(row.get("ord_qty", 0)),
        "price": _dec(row.get("ord_unpr", 0)),
        "filled": _int(row.get("tot_ccld_qty", 0)),
    }


def today_kst() -> dt.date:
    return dt.datetime.now(KST).date()


def mask(value: str) -> str:
    """An account number or id for a log line: its last 2 characters."""
    value = str(value)
    return "*" * max(0, len(value) - 2) + value[-2:] if len(value) > 4 else "***"


_ACCOUNT_RE = re.compile(r"((?:CANO|CTX_AREA_FK100|CTX_AREA_NK100)=)([^&\s\"']*)", re.IGNORECASE)


class _MaskAccountInURLs(logging.Filter):
    """httpx logs every request's URL at INFO; inquiries carry the account in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        upper = message.upper()
        if "CANO=" in upper or "CTX_AREA_" in upper:
            record.msg = _ACCOUNT_RE.sub(lambda m: m[1] + (mask(m[2]) if m[2] else ""), message)
            record.args = None
        return True


logging.getLogger("httpx").addFilter(_MaskAccountInURLs())


def _candle(row: dict, symbol: str, interval: str, at: dt.datetime, *, close: str, volume: str):
    """A Candle from a KIS chart row (daily rows name the close stck_clpr and the volume
    acml_vol; minute rows stck_prpr and cntg_vol)."""
    return Candle(
        symbol=symbol,
        interval=interval,
        time=at,
        open=_dec(row.get("stck_oprc"), "stck_oprc"),
        high=_dec(row.get("stck_hgpr"), "stck_hgpr"),
        low=_dec(row.get("stck_lwpr"), "stck_lwpr"),
        close=_dec(row.get(close), close),
        volume=_int(row.get(volume), volume),
    )


class KISClient:
    """See the module doc. `redis` is a redis.asyncio.Redis (the caller closes it); `http` an
    optional httpx.AsyncClient (else one is made and closed by `async with`)."""

    def __init__(
        self,
        config: kc.KISConfig,
        *,
        redis,
        http: httpx.AsyncClient | None = None,
        backoff_base: float = kc.BACKOFF_BASE_SECONDS,
        backoff_max: float = kc.BACKOFF_MAX_SECONDS,
    ):
        self.config = config
        self.redis = redis
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=config.timeout)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.tokens = TokenStore(config, redis=redis, http=self.http)
        self.limiter = RateLimiter(redis, key=config.limiter_key, limit=config.rate_per_second)

    async def __aenter__(self) -> KISClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # --- the one way out ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        tr_id: str,
        params: dict | None = None,
        body: dict | None = None,
        tr_cont: str = "",
    ) -> KISResponse:
        """One KIS call with the headers, rate limit, retries and errors of the module doc."""
        method = method.upper()
        idempotent = method == "GET"
        retries = self.config.max_retries
        token_renewed = False
        attempt = 0
        while True:
            started = time.monotonic()
            token = None
            try:
                try:
                    token = await self.tokens.access_token()
                except KISUnavailable as exc:
                    exc.not_sent = True  # no token: the call itself never went out
                    raise
                await self.limiter.acquire()
                started = time.monotonic()
                response = await self._send(method, path, token.value, tr_id, params, body, tr_cont)
                answer = self._answer(response, tr_id=tr_id, path=path)
            except KISError as exc:
                self._log_failure(method, path, tr_id, params, body, exc, started)
                if (
                    isinstance(exc, KISAuthError)
                    and exc.msg_cd in kc.TOKEN_MSG_CODES
                    and token is not None
                ):
                    if token_renewed:
                        raise
                    token_renewed = True
                    await self.tokens.invalidate(token.value)
                    continue
                retryable = isinstance(exc, KISRateLimited) or (
                    isinstance(exc, KISUnavailable)
                    and (idempotent or getattr(exc, "not_sent", False))
                )
                if not retryable or attempt >= retries:
                    raise
                delay = min(self.backoff_max, self.backoff_base * 2**attempt)
                delay *= random.uniform(0.5, 1.0)
                attempt += 1
                logger.warning(
                    "KIS %s %s (%s): %s; retry %d of %d in %.2f s",
                    method,
                    path,
                    tr_id,
                    exc.msg_cd or type(exc).__name__,
                    attempt,
                    retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "KIS %s %s (%s) %s -> %s %s %s (%.0f ms)",
                    method,
                    path,
                    tr_id,
                    self._masked(params or body or {}),
                    response.status_code,
                    answer.body.get("msg_cd", ""),
                    answer.tr_cont or "-",
                    (time.monotonic() - started) * 1000,
                )
            return answer

    async def _send(self, method, path, token, tr_id, params, body, tr_cont) -> httpx.Response:
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {token}",
            "appkey": self.config.app_key,
            "appsecret": self.config.app_secret,
            "tr_id": tr_id,
            "custtype": "P",
            "tr_cont": tr_cont,
        }
        try:
            return await self.http.request(
                method,
                self.config.rest_url + path,
                params=params,
                json=body if method != "GET" else None,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            error = KISUnavailable(
                f"KIS {path} ({tr_id}): {type(exc).__name__} (no answer).",
                tr_id=tr_id,
                path=path,
            )
            # Nothing reached KIS: safe to retry even an order.
            error.not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise error from None

    @staticmethod
    def _answer(response: httpx.Response, *, tr_id: str, path: str) -> KISResponse:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "rt_cd" not in body:
            kind = KISUnavailable if status >= 500 else KISError
            raise kind(
                f"KIS {path} ({tr_id}): an answer without rt_cd [HTTP {status}].",
                http_status=status,
                tr_id=tr_id,
                path=path,
            )
        if str(body.get("rt_cd")) != "0" or status != 200:
            raise KISError.from_answer(body, http_status=status, tr_id=tr_id, path=path)
        return KISResponse(body=body, tr_cont=response.headers.get("tr_cont", "").strip())

    def _masked(self, data: dict) -> dict:
        return {k: mask(v) if k.upper() in _ACCOUNT_KEYS and v else v for k, v in data.items()}

    def _log_failure(self, method, path, tr_id, params, body, exc, started) -> None:
        logger.debug(
            "KIS %s %s (%s) %s -> %s (%.0f ms)",
            method,
            path,
            tr_id,
            self._masked(params or body or {}),
            exc.message,
            (time.monotonic() - started) * 1000,
        )

    async def pages(
        self,
        method: str,
        path: str,
        *,
        tr_id: str,
        params: dict,
        max_pages: int = 1000,
    ) -> AsyncIterator[KISResponse]:
        """Each page of a paged inquiry: tr_cont M / F -> the next call with tr_cont N and the
        answer's ctx_area_fk100 / nk100 as CTX_AREA_FK100 / NK100 (when params has them)."""
        params = dict(params)
        tr_cont = ""
        for _ in range(max_pages):
            page = await self.request(method, path, tr_id=tr_id, params=params, tr_cont=tr_cont)
            yield page
            if not page.has_more:
                return
            tr_cont = NEXT
            before = [params.get(key) for key in _CTX_KEYS]
            for key in _CTX_KEYS:
                if key in params:
                    params[key] = str(page.body.get(key.lower(), "") or "").strip()
            if any(key in params for key in _CTX_KEYS) and before == [
                params.get(key) for key in _CTX_KEYS
            ]:
                # The same context asks for the same page again: never ends.
                raise KISError(
                    f"KIS {path} ({tr_id}): tr_cont {page.tr_cont} (more) with the same paging"
                    " context as the page before; stopped.",
                    tr_id=tr_id,
                    path=path,
                )
        raise KISError(f"KIS {path} ({tr_id}): more than {max_pages} pages.", tr_id=tr_id)

    # --- quotations -----------------------------------------------------------------------------

    async def current_price(self, symbol: str, *, market: str = "J") -> Quote:
        """The current price of `symbol` (KRX: market J)."""
        _check_symbol(symbol)
        answer = await self.request(
            "GET",
            kc.PATH_PRICE,
            tr_id=self.config.tr_id("price"),
            params={"FID_COND_MRKT_DIV_CODE": market, "FID_INPUT_ISCD": symbol},
        )
        out = answer.body.get("output") or {}
        if not out.get("stck_prpr"):
            raise KISError(f"KIS gave no price for {symbol}.", tr_id=self.config.tr_id("price"))
        return Quote(
            symbol=symbol,
            price=_dec(out.get("stck_prpr"), "stck_prpr"),
            change=_dec(out.get("prdy_vrss", 0), "prdy_vrss"),
            change_rate=_dec(out.get("prdy_ctrt", 0), "prdy_ctrt"),
            open=_dec(out.get("stck_oprc", 0), "stck_oprc"),
            high=_dec(out.get("stck_hgpr", 0), "stck_hgpr"),
            low=_dec(out.get("stck_lwpr", 0), "stck_lwpr"),
            volume=_int(out.get("acml_vol", 0), "acml_vol"),
            upper_limit=_dec(out.get("stck_mxpr", 0), "stck_mxpr"),
            lower_limit=_dec(out.get("stck_llam", 0), "stck_llam"),
            base_price=_dec(out.get("stck_sdpr", 0), "stck_sdpr"),
            received_at=dt.datetime.now(dt.UTC),
        )

    async def daily_candle_batches(
        self, symbol: str, start: dt.date, end: dt.date, *, adjusted: bool = True
    ) -> AsyncIterator[list[Candle]]:
        """Daily candles from `end` back to `start`, one call's rows (<= 100) at a time, each
        batch oldest first; pages by moving FID_INPUT_DATE_2 before the oldest row."""
        _check_symbol(symbol)
        if start > end:
            raise InvalidInput(f"start {start} is after end {end}.")
        tr_id = self.config.tr_id("daily_candles")
        until = end
        while until >= start:
            answer = await self.request(
                "GET",
                kc.PATH_DAILY_CANDLES,
                tr_id=tr_id,
                params={
                    "FID_COND_MRKT_DIV_CODE": "J",
                    "FID_INPUT_ISCD": symbol,
                    "FID_INPUT_DATE_1": start.strftime("%Y%m%d"),
                    "FID_INPUT_DATE_2": until.strftime("%Y%m%d"),
                    "FID_PERIOD_DIV_CODE": "D",
                    "FID_ORG_ADJ_PRC": "0" if adjusted else "1",
                },
            )
            batch = []
            for row in answer.body.get("output2") or []:
                day_text = (row or {}).get("stck_bsop_date", "")
                if not day_text:
                    continue  # KIS pads with empty rows
                day = _date(day_text)
                if not start <= day <= until:
                    continue
                at = dt.datetime.combine(day, dt.time(0), tzinfo=KST)
                batch.append(_candle(row, symbol, "1d", at, close="stck_clpr", volume="acml_vol"))
            if not batch:
                return
            batch.sort(key=lambda c: c.time)
            yield batch
            oldest = batch[0].time.date()
            if len(batch) < kc.DAILY_CANDLES_PER_CALL and not answer.has_more:
                return
            until = oldest - dt.timedelta(days=1)

    async def daily_candles(
        self, symbol: str, start: dt.date, end: dt.date, *, adjusted: bool = True
    ) -> list[Candle]:
        """Daily candles (1d, time 00:00 KST) from start to end inclusive, oldest first."""
        candles: list[Candle] = []
        async for batch in self.daily_candle_batches(symbol, start, end, adjusted=adjusted):
            candles[:0] = batch
        return candles

    async def minute_candle_batches(
        self, symbol: str, day: dt.date, *, until: dt.time | None = None
    ) -> AsyncIterator[list[Candle]]:
        """One day's minute candles from `until` (default 15:30) back to 09:00, one call's
        rows at a time (oldest first within a batch). Today: FHKST03010200 (30 rows a call);
        earlier days: FHKST03010230 (120 rows a call). Paged by moving FID_INPUT_HOUR_1
        before the oldest row. A row's stck_cntg_hour is taken as the candle's open minute."""
        _check_symbol(symbol)
        today = day == today_kst()
        if today:
            path, tr_id = kc.PATH_MINUTE_CANDLES_TODAY, self.config.tr_id("minute_candles_today")
        else:
            path, tr_id = kc.PATH_MINUTE_CANDLES_PAST, self.config.tr_id("minute_candles_past")
        hour = until or dt.time(15, 30)
        opening = dt.time(9, 0)
        while hour >= opening:
            params = {
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": symbol,
                "FID_INPUT_HOUR_1": hour.strftime("%H%M%S"),
                "FID_PW_DATA_INCU_YN": "Y",
            }
            if today:
                params["FID_ETC_CLS_CODE"] = ""
            else:
                params["FID_INPUT_DATE_1"] = day.strftime("%Y%m%d")
                params["FID_FAKE_TICK_INCU_YN"] = ""
            answer = await self.request("GET", path, tr_id=tr_id, params=params)
            batch = []
            for row in answer.body.get("output2") or []:
                row = row or {}
                if row.get("stck_bsop_date") and row["stck_bsop_date"] != day.strftime("%Y%m%d"):
                    continue  # the previous day's rows (FID_PW_DATA_INCU_YN)
                start = _kst_time(day, row.get("stck_cntg_hour", ""))
                if start is None or start.time() > hour:
                    continue
                batch.append(
                    _candle(row, symbol, "1m", start, close="stck_prpr", volume="cntg_vol")
                )
            if not batch:
                return
            batch.sort(key=lambda c: c.time)
            yield batch
            oldest = batch[0].time
            if oldest.time() <= opening:
                return
            hour = (oldest - dt.timedelta(minutes=1)).time()

    async def minute_candles(
        self, symbol: str, day: dt.date, *, until: dt.time | None = None
    ) -> list[Candle]:
        """One day's 1m candles, oldest first (see minute_candle_batches)."""
        candles: list[Candle] = []
        async for batch in self.minute_candle_batches(symbol, day, until=until):
            candles[:0] = batch
        return candles

    # --- orders ---------------------------------------------------------------------------------

    async def order_cash(
        self,
        side: str,
        symbol: str,
        quantity: int,
        price: Decimal | None,
        *,
        exchange: str = "KRX",
    ) -> OrderAck:
        """A cash order: limit at `price`, or market when price is None. KISError when KIS
        refuses it (msg_cd / msg1 say why)."""
        if side not in SIDES:
            raise InvalidInput(f"side {side!r} is not buy or sell.")
        _check_symbol(symbol)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise InvalidInput(f"quantity {quantity!r} is not a whole number >= 1.")
        if price is not None:
            if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
                raise InvalidInput(f"price {price!r} is not a Decimal > 0.")
            if price != price.to_integral_value():
                raise InvalidInput(f"price {price} is not a whole number of won.")
        cano, product = self.config.require_account()
        body = {
            "CANO": cano,
            "ACNT_PRDT_CD": product,
            "PDNO": symbol,
            "ORD_DVSN": "01" if price is None else "00",
            "ORD_QTY": str(quantity),
            "ORD_UNPR": "0" if price is None else str(int(price)),
            "EXCG_ID_DVSN_CD": exchange,
        }
        answer = await self.request(
            "POST",
            kc.PATH_ORDER_CASH,
            tr_id=self.config.tr_id("order_buy" if side == "buy" else "order_sell"),
            body=body,
        )
        return _ack(answer)

    async def order_cancel(
        self, org_no: str, order_no: str, quantity: int = 0, *, all: bool = True
    ) -> OrderAck:
        """Cancel an order: all of what remains (default), or `quantity` of it."""
        if not all and (not isinstance(quantity, int) or quantity < 1):
            raise InvalidInput(f"quantity {quantity!r} must be >= 1 for a partial cancel.")
        cano, product = self.config.require_account()
        body = {
            "CANO": cano,
            "ACNT_PRDT_CD": product,
            "KRX_FWDG_ORD_ORGNO": str(org_no),
            "ORGN_ODNO": str(order_no),
            "ORD_DVSN": "00",
            "RVSE_CNCL_DVSN_CD": "02",
            "ORD_QTY": "0" if all else str(quantity),
            "ORD_UNPR": "0",
            "QTY_ALL_ORD_YN": "Y" if all else "N",
            "EXCG_ID_DVSN_CD": "KRX",
        }
        answer = await self.request(
            "POST",
            kc.PATH_ORDER_REVISE_CANCEL,
            tr_id=self.config.tr_id("order_revise_cancel"),
            body=body,
        )
        return _ack(answer)

    async def cancellable_orders(self) -> list[OpenOrder]:
        """Orders that can still be amended or cancelled (real accounts only: KIS offers no
        such call for virtual ones -> KISNotSupported)."""
        tr_id = self.config.tr_id("cancellable_orders")
        cano, product = self.config.require_account()
        params = {
            "CANO": cano,
            "ACNT_PRDT_CD": product,
            "CTX_AREA_FK100": "",
            "CTX_AREA_NK100": "",
            "INQR_DVSN_1": "0",
            "INQR_DVSN_2": "0",
        }
        today = today_kst()
        orders = []
        async for page in self.pages("GET", kc.PATH_CANCELLABLE_ORDERS, tr_id=tr_id, params=params):
            for row in page.body.get("output") or []:
                if not row or not row.get("odno"):
                    continue
                orders.append(
                    OpenOrder(
                        **_order_row(row),
                        cancellable=_int(row.get("psbl_qty", 0)),
                        time=_kst_time(today, row.get("ord_tmd", "")),
                    )
                )
        return orders

    async def daily_fills(self, start: dt.date, end: dt.date) -> list[OrderFills]:
        """Orders and their fills from start to end (TTTC0081R; older than 3 months KIS wants
        CTSC9215R, not supported here)."""
        if start > end:
            raise InvalidInput(f"start {start} is after end {end}.")
        cano, product = self.config.require_account()
        params = {
            "CANO": cano,
            "ACNT_PRDT_CD": product,
            "INQR_STRT_DT": start.strftime("%Y%m%d"),
            "INQR_END_DT": end.strftime("%Y%m%d"),
            "SLL_BUY_DVSN_CD": "00",
            "INQR_DVSN": "00",
            "PDNO": "",
            "CCLD_DVSN": "00",
            "ORD_GNO_BRNO": "",
            "ODNO": "",
            "INQR_DVSN_3": "00",
            "INQR_DVSN_1": "",
            "EXCG_ID_DVSN_CD": "KRX",
            "CTX_AREA_FK100": "",
            "CTX_AREA_NK100": "",
        }
        result = []
        async for page in self.pages(
            "GET", kc.PATH_DAILY_FILLS, tr_id=self.config.tr_id("daily_fills"), params=params
        ):
            for row in page.body.get("output1") or []:
                if not row or not row.get("odno"):
                    continue
                day = _date(row["ord_dt"])
                result.append(
                    OrderFills(
                        date=day,
                        **_order_row(row),
                        average_price=_dec(row.get("avg_prvs", 0)),
                        filled_amount=_dec(row.get("tot_ccld_amt", 0)),
                        remaining=_int(row.get("rmn_qty", 0)),
                        cancelled=row.get("cncl_yn", "N") == "Y",
                        time=_kst_time(day, row.get("ord_tmd", "")),
                    )
                )
        return result

    async def balance(self) -> Balance:
        """Positions (all pages) and cash."""
        cano, product = self.config.require_account()
        params = {
            "CANO": cano,
            "ACNT_PRDT_CD": product,
            "AFHR_FLPR_YN": "N",
            "OFL_YN": "",
            "INQR_DVSN": "02",
            "UNPR_DVSN": "01",
            "FUND_STTL_ICLD_YN": "N",
            "FNCG_AMT_AUTO_RDPT_YN": "N",
            "PRCS_DVSN": "00",
            "CTX_AREA_FK100": "",
            "CTX_AREA_NK100": "",
        }
        positions = []
        summary: dict = {}
        async for page in self.pages(
            "GET", kc.PATH_BALANCE, tr_id=self.config.tr_id("balance"), params=params
        ):
            for row in page.body.get("output1") or []:
                if not row or not row.get("pdno"):
                    continue
                positions.append(
                    Position(
                        symbol=row["pdno"],
                        name=row.get("prdt_name", ""),
                        quantity=_int(row.get("hldg_qty", 0)),
                        sellable=_int(row.get("ord_psbl_qty", 0)),
                        average_price=_dec(row.get("pchs_avg_pric", 0)),
                        price=_dec(row.get("prpr", 0)),
                        value=_dec(row.get("evlu_amt", 0)),
                        profit=_dec(row.get("evlu_pfls_amt", 0)),
                    )
                )
            output2 = page.body.get("output2") or []
            if output2:
                summary = output2[0] if isinstance(output2, list) else output2
        return Balance(
            positions=positions,
            cash=_dec(summary.get("dnca_tot_amt", 0)),
            cash_d2=_dec(summary.get("prvs_rcdl_excc_amt", 0)),
            total_value=_dec(summary.get("tot_evlu_amt", 0)),
            net_assets=_dec(summary.get("nass_amt", 0)),
        )


def _ack(answer: KISResponse) -> OrderAck:
    out = answer.body.get("output") or {}
    order_no = out.get("ODNO") or out.get("odno")
    if not order_no:
        raise KISError("KIS accepted the order but sent no ODNO.")
    return OrderAck(
        org_no=out.get("KRX_FWDG_ORD_ORGNO") or out.get("krx_fwdg_ord_orgno") or "",
        order_no=order_no,
        time=_kst_time(today_kst(), out.get("ORD_TMD") or out.get("ord_tmd") or ""),
    )


def _check_symbol(symbol: str) -> None:
    if not isinstance(symbol, str) or len(symbol) != 6 or not symbol.isalnum():
        raise InvalidInput(f"symbol {symbol!r} is not a KRX code (6 characters).")
