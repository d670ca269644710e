"""A fake KIS Open API server on a loopback port, for tests (never used in production).

It speaks the documented protocol (KIS.md): the same paths, headers, TR ids, JSON bodies,
rt_cd / msg_cd / msg1, tr_cont paging and the EGW00201 per-second limit. It is an ASGI app
served by uvicorn in a background thread:

    with FakeKISServer() as fake:          # or the `fake_kis` pytest fixture (kis.testing)
        fake.rest_url                      # http://127.0.0.1:<port>
        fake.ws_url                        # ws://127.0.0.1:<port>/tryitout
        fake.state                         # FakeKISState: inspect and steer it from tests

WebSocket connections (ASGI scope type "websocket") are handed to
`kis.testing.fake_ws.websocket_app(state, scope, receive, send)`, imported when the first one
arrives; without that module the socket is closed.

The state is shared by the server thread and the test: every access takes `state.lock`
(an RLock; the steering methods take it themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl

from kis import config as kc

KST = dt.timezone(dt.timedelta(hours=9), "KST")

# KIS-like answers for the cases the fake refuses (the shape KIS uses; codes as seen in its
# samples and notices, not an official list).
MSG_OK = ("MCA00000", "정상처리 되었습니다.")
MSG_ORDER_OK = ("APBK0013", "주문 전송 완료 되었습니다.")
MSG_CANCEL_OK = ("APBK0017", "주문취소가 완료 되었습니다.")
MSG_RATE_LIMITED = (kc.MSG_RATE_LIMITED, "초당 거래건수를 초과하였습니다.")
MSG_TOKEN_EXPIRED = (kc.MSG_TOKEN_EXPIRED, "기간이 만료된 token 입니다.")
MSG_TOKEN_INVALID = (kc.MSG_TOKEN_INVALID, "유효하지 않은 token 입니다.")
MSG_BAD_APPKEY = ("EGW00103", "유효하지 않은 AppKey입니다.")
MSG_BAD_SECRET = ("EGW00105", "유효하지 않은 AppSecret입니다.")
MSG_NO_TR_ID = ("EGW00202", "GW라우팅 중 오류가 발생했습니다.")
MSG_INSUFFICIENT_CASH = ("APBK0952", "주문가능금액을 초과 했습니다")
MSG_OFF_TICK = ("APBK1669", "호가단위 오류입니다.")
MSG_BAD_QTY = ("APBK0400", "주문수량을 확인하여 주십시오.")
MSG_NO_ORDER = ("APBK0918", "원주문번호가 존재하지 않습니다.")
MSG_NOTHING_TO_CANCEL = ("APBK0919", "취소가능수량이 없습니다.")
MSG_NO_SYMBOL = ("APBK1001", "종목코드를 확인하여 주십시오.")
MSG_SERVER_ERROR = ("", "")


def krx_tick(price: Decimal) -> Decimal:
    """KRX stock tick size for a price (2023 table)."""
    for bound, tick in (
        (2000, 1),
        (5000, 5),
        (20000, 10),
        (50000, 50),
        (200000, 100),
        (500000, 500),
    ):
        if price < bound:
            return Decimal(tick)
    return Decimal(1000)


@dataclass
class Fault:
    """One injected failure: an HTTP status with a KIS body, or a dropped connection."""

    status: int = 500
    msg_cd: str = ""
    msg1: str = ""
    drop: bool = False  # close the connection without an answer
    path: str | None = None  # only requests to this path (None: any /uapi path)
    skip: int = 0  # let this many matching requests through first


@dataclass
class IssuedToken:
    token: str
    app_key: str
    issued_at: float  # time.time()
    expires_at: float


@dataclass
class FakeOrder:
    odno: str
    org_no: str
    side: str  # "buy" / "sell"
    symbol: str
    quantity: int
    price: Decimal  # 0 for market orders
    ord_dvsn: str
    time: dt.datetime  # KST
    filled: int = 0
    fill_amount: Decimal = Decimal(0)
    cancelled: int = 0
    fills: list = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled - self.cancelled


class FakeKISState:
    """What the fake knows and does; tests read and change it (see the methods)."""

    def __init__(self, *, app_key: str = "", app_secret: str = "", rate_limit: int | None = 18):
        self.lock = threading.RLock()
        # Credentials it accepts (empty: any).
        self.app_key = app_key
        self.app_secret = app_secret
        # Tokens: a token lives token_lifetime seconds; asking again within token_reuse
        # seconds of its issue returns the same one (as KIS does within 6 h).
        self.token_lifetime = 24 * 3600.0
        self.token_reuse = 6 * 3600.0
        self.tokens: list[IssuedToken] = []
        self.token_issuances = 0  # answers with a new token
        self.token_requests = 0  # every POST /oauth2/tokenP
        self.token_delay = 0.0  # seconds the token endpoint takes (to make races real)
        self.approval_keys: dict[str, float] = {}  # approval key -> issued (time.time())
        self.approval_requests = 0
        # Per-second limit per app key (None: off); every /uapi request is recorded.
        self.rate_limit = rate_limit
        self.requests: list[dict] = []  # {t (monotonic), method, path, tr_id, tr_cont, status}
        self.rate_limited = 0
        self._recent: dict[str, deque] = {}
        self.faults: deque[Fault] = deque()
        # Quotes: symbol -> dict of output fields (strings, as KIS sends them).
        self.prices: dict[str, dict] = {}
        # Account: cash (KRW), positions symbol -> [qty, average price].
        self.cash = Decimal(100_000_000)
        self.positions: dict[str, list] = {}
        self.orders: dict[str, FakeOrder] = {}
        self.branch = "06010"  # KRX_FWDG_ORD_ORGNO
        self._next_odno = 1
        self.balance_page_size = 50
        self.fills_page_size = 100
        # A KIS quirk to test against: the last page still says tr_cont M (more), with a
        # context that points nowhere new.
        self.more_on_last_page = False
        self.daily_candles: dict[str, dict[dt.date, tuple]] = {}  # explicit history
        self.minute_candles: dict[str, dict[dt.datetime, tuple]] = {}
        self.generate_history = True  # deterministic candles for any symbol and date

    # --- steering -------------------------------------------------------------------------

    def set_price(self, symbol: str, price, **fields) -> None:
        """The current price of `symbol` (and any other output field, as strings)."""
        price = Decimal(price)
        with self.lock:
            output = {
                "stck_prpr": str(price),
                "prdy_vrss": "0",
                "prdy_vrss_sign": "3",
                "prdy_ctrt": "0.00",
                "stck_oprc": str(price),
                "stck_hgpr": str(price),
                "stck_lwpr": str(price),
                "acml_vol": "0",
                "stck_mxpr": str(price * Decimal("1.3")),
                "stck_llam": str(price * Decimal("0.7")),
                "stck_sdpr": str(price),
            }
            output.update({k: str(v) for k, v in fields.items()})
            self.prices[symbol] = output

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        msg_cd: str = "",
        msg1: str = "",
        drop: bool = False,
        path: str | None = None,
        skip: int = 0,
    ) -> None:
        """The next `count` requests to `path` (None: any /uapi path) fail: HTTP `status`
        with rt_cd "1" and the given msg_cd / msg1 (an empty msg_cd: a bare error page without
        rt_cd), or (drop) a connection closed in the middle of the answer; `skip` matching
        requests are answered normally first."""
        with self.lock:
            for n in range(count):
                self.faults.append(Fault(status, msg_cd, msg1, drop, path, skip if n == 0 else 0))

    def expire_tokens(self) -> None:
        """Every issued token expires now (the next call with one gets EGW00123)."""
        with self.lock:
            for token in self.tokens:
                token.expires_at = time.time() - 1

    def max_per_window(self, window: float = 1.0, *, path_prefix: str = "/uapi") -> int:
        """The most requests (answered or refused) seen in any `window` seconds."""
        with self.lock:
            times = sorted(r["t"] for r in self.requests if r["path"].startswith(path_prefix))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def requests_to(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def fill(self, odno: str, quantity: int, price=None) -> None:
        """Fill `quantity` of order `odno` at `price` (default: its limit, else the current
        price): cash and positions move as at KIS (no fees)."""
        with self.lock:
            order = self.orders[odno]
            if quantity < 1 or quantity > order.remaining:
                raise ValueError(f"order {odno} has {order.remaining} left, not {quantity}")
            if price is None:
                price = order.price or Decimal(self.prices[order.symbol]["stck_prpr"])
            price = Decimal(price)
            order.filled += quantity
            order.fill_amount += price * quantity
            order.fills.append((quantity, price, dt.datetime.now(KST)))
            held = self.positions.setdefault(order.symbol, [0, Decimal(0)])
            if order.side == "buy":
                self.cash -= price * quantity
                total = held[1] * held[0] + price * quantity
                held[0] += quantity
                held[1] = total / held[0]
            else:
                self.cash += price * quantity
                held[0] -= quantity
                if held[0] == 0:
                    del self.positions[order.symbol]

    def set_position(self, symbol: str, quantity: int, average_price) -> None:
        with self.lock:
            self.positions[symbol] = [quantity, Decimal(average_price)]

    def set_daily_candles(self, symbol: str, rows: dict) -> None:
        """Explicit daily history: {date: (open, high, low, close, volume)}."""
        with self.lock:
            self.daily_candles.setdefault(symbol, {}).update(rows)

    def daily_rows(self, symbol: str, start: dt.date, end: dt.date) -> list[tuple]:
        """[(date, open, high, low, close, volume)] newest first: the explicit history, else a
        generated one (weekdays, on-tick prices derived from the symbol and the date)."""
        with self.lock:
            explicit = self.daily_candles.get(symbol)
            if explicit is not None:
                days = sorted((d for d in explicit if start <= d <= end), reverse=True)
                return [(d, *explicit[d]) for d in days]
        if not self.generate_history or not _is_code(symbol):
            return []
        rows = []
        day = end
        while day >= start:
            if day.weekday() < 5:
                rows.append((day, *_generated_candle(symbol, day.isoformat())))
            day -= dt.timedelta(days=1)
        return rows

    def minute_rows(self, symbol: str, day: dt.date, until: dt.time) -> list[tuple]:
        """[(time, open, high, low, close, volume)] newest first, 09:00 .. until."""
        with self.lock:
            explicit = self.minute_candles.get(symbol)
            if explicit is not None:
                times = sorted(
                    (t for t in explicit if t.date() == day and t.time() <= until), reverse=True
                )
                return [(t.time(), *explicit[t]) for t in times]
        if not self.generate_history or not _is_code(symbol) or day.weekday() >= 5:
            return []
        rows = []
        minute = dt.datetime.combine(day, min(until, dt.time(15, 30)))
        minute = minute.replace(second=0)
        opening = dt.datetime.combine(day, dt.time(9, 0))
        while minute >= opening:
            rows.append((minute.time(), *_generated_candle(symbol, minute.isoformat())))
            minute -= dt.timedelta(minutes=1)
        return rows

    # --- tokens -----------------------------------------------------------------------------

    def issue_token(self, app_key: str) -> IssuedToken:
        with self.lock:
            now = time.time()
            for token in reversed(self.tokens):
                if (
                    token.app_key == app_key
                    and now - token.issued_at < self.token_reuse
                    and token.expires_at > now
                ):
                    return token
            token = IssuedToken(
                token="fake-" + secrets.token_urlsafe(24),
                app_key=app_key,
                issued_at=now,
                expires_at=now + self.token_lifetime,
            )
            self.tokens.append(token)
            self.token_issuances += 1
            return token

    def token_problem(self, bearer: str) -> tuple[str, str] | None:
        with self.lock:
            for token in self.tokens:
                if token.token == bearer:
                    return MSG_TOKEN_EXPIRED if token.expires_at <= time.time() else None
        return MSG_TOKEN_INVALID


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str).encode()


class _Answer(Exception):
    """Raised by a handler to answer at once."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def _fail(msg: tuple[str, str], status: int = 500) -> _Answer:
    return _Answer(status, {"rt_cd": "1", "msg_cd": msg[0], "msg1": msg[1]})


class FakeKISApp:
    """The ASGI application over a FakeKISState."""

    def __init__(self, state: FakeKISState):
        self.state = state
        self.routes = {
            ("POST", kc.PATH_TOKEN): self.token,
            ("POST", kc.PATH_APPROVAL): self.approval,
            ("GET", kc.PATH_PRICE): self.price,
            ("GET", kc.PATH_DAILY_CANDLES): self.daily_candles,
            ("GET", kc.PATH_MINUTE_CANDLES_TODAY): self.minute_candles_today,
            ("GET", kc.PATH_MINUTE_CANDLES_PAST): self.minute_candles_past,
            ("POST", kc.PATH_ORDER_CASH): self.order_cash,
            ("POST", kc.PATH_ORDER_REVISE_CANCEL): self.order_revise_cancel,
            ("GET", kc.PATH_CANCELLABLE_ORDERS): self.cancellable_orders,
            ("GET", kc.PATH_DAILY_FILLS): self.daily_fills,
            ("GET", kc.PATH_BALANCE): self.balance,
        }

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def websocket(self, scope, receive, send):
        try:
            from kis.testing.fake_ws import websocket_app
        except ImportError:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1011})
            return
        await websocket_app(self.state, scope, receive, send)

    async def http(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True))
        state = self.state
        record = {
            "t": time.monotonic(),
            "method": method,
            "path": path,
            "tr_id": headers.get("tr_id", ""),
            "tr_cont": headers.get("tr_cont", ""),
            "params": query,
            "status": 0,
        }
        with state.lock:
            state.requests.append(record)
            fault = next(
                (
                    f
                    for f in state.faults
                    if f.path == path or (f.path is None and path.startswith("/uapi"))
                ),
                None,
            )
            if fault is not None and fault.skip:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                state.faults.remove(fault)
        try:
            if fault is not None:
                if fault.drop:
                    record["status"] = -1
                    raise _Drop
                if fault.msg_cd:
                    raise _fail((fault.msg_cd, fault.msg1), fault.status)
                raise _Answer(fault.status, {"error": "injected"})
            if path == kc.PATH_TOKEN and state.token_delay:
                await asyncio.sleep(state.token_delay)
            handler = self.routes.get((method, path))
            if handler is None:
                raise _Answer(404, {"rt_cd": "1", "msg_cd": "EGW00001", "msg1": "no such path"})
            try:
                payload = json.loads(body) if body else {}
            except ValueError:
                raise _fail(("EGW00002", "JSON 형식이 올바르지 않습니다."), 400) from None
            if path.startswith("/uapi"):
                self._authorize(headers)
                self._rate_limit(headers)
                if not headers.get("tr_id"):
                    raise _fail(MSG_NO_TR_ID, 500)
            answer = handler(query=query, body=payload, headers=headers)
            if isinstance(answer, _Answer):
                raise answer
            raise _Answer(200, answer)
        except _Drop:
            # Half an answer, then the connection closes (uvicorn closes it when the app ends
            # inside a response; it logs that as an error): the client sees the peer hang up.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            return
        except _Answer as answer:
            record["status"] = answer.status
            raw = _json(answer.body)
            out_headers = [(b"content-type", b"application/json; charset=utf-8")]
            out_headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
            if path.startswith("/uapi"):
                out_headers.append((b"tr_id", headers.get("tr_id", "").encode()))
                if "tr_cont" not in answer.headers:
                    out_headers.append((b"tr_cont", b""))
            await send(
                {"type": "http.response.start", "status": answer.status, "headers": out_headers}
            )
            await send({"type": "http.response.body", "body": raw})

    # --- checks -----------------------------------------------------------------------------

    def _authorize(self, headers: dict) -> None:
        state = self.state
        if state.app_key and headers.get("appkey") != state.app_key:
            raise _fail(MSG_BAD_APPKEY, 403)
        if state.app_secret and headers.get("appsecret") != state.app_secret:
            raise _fail(MSG_BAD_SECRET, 403)
        bearer = headers.get("authorization", "")
        if not bearer.startswith("Bearer "):
            raise _fail(MSG_TOKEN_INVALID, 403)
        problem = state.token_problem(bearer[len("Bearer ") :])
        if problem:
            raise _fail(problem, 500)

    def _rate_limit(self, headers: dict) -> None:
        state = self.state
        with state.lock:
            if state.rate_limit is None:
                return
            now = time.monotonic()
            recent = state._recent.setdefault(headers.get("appkey", ""), deque())
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= state.rate_limit:
                state.rate_limited += 1
                raise _fail(MSG_RATE_LIMITED, 500)
            recent.append(now)

    def _credentials(self, body: dict, secret_field: str) -> tuple[str, str]:
        state = self.state
        if body.get("grant_type") != "client_credentials":
            raise _Answer(400, {"error_code": "EGW00002", "error_description": "grant_type 오류"})
        key, secret = body.get("appkey", ""), body.get(secret_field, "")
        if not key or (state.app_key and key != state.app_key):
            raise _Answer(
                403, {"error_code": MSG_BAD_APPKEY[0], "error_description": MSG_BAD_APPKEY[1]}
            )
        if not secret or (state.app_secret and secret != state.app_secret):
            raise _Answer(
                403, {"error_code": MSG_BAD_SECRET[0], "error_description": MSG_BAD_SECRET[1]}
            )
        return key, secret

    # --- endpoints --------------------------------------------------------------------------

    def token(self, *, body, **_):
        with self.state.lock:
            self.state.token_requests += 1
        key, _secret = self._credentials(body, "appsecret")
        token = self.state.issue_token(key)
        expires = dt.datetime.fromtimestamp(token.expires_at, KST)
        return {
            "access_token": token.token,
            "token_type": "Bearer",
            "expires_in": max(0, int(token.expires_at - time.time())),
            "access_token_token_expired": expires.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def approval(self, *, body, **_):
        with self.state.lock:
            self.state.approval_requests += 1
        self._credentials(body, "secretkey")
        key = secrets.token_hex(16) + "-" + secrets.token_hex(10)
        with self.state.lock:
            self.state.approval_keys[key] = time.time()
        return {"approval_key": key}

    def price(self, *, query, **_):
        symbol = query.get("FID_INPUT_ISCD", "")
        if query.get("FID_COND_MRKT_DIV_CODE") not in ("J", "NX", "UN"):
            raise _fail(("OPSQ2001", "FID_COND_MRKT_DIV_CODE 값을 확인해 주십시오."), 500)
        with self.state.lock:
            output = self.state.prices.get(symbol)
            if output is None and self.state.generate_history and _is_code(symbol):
                self.state.set_price(symbol, _base_price(symbol))
                output = self.state.prices[symbol]
        if output is None:
            raise _fail(MSG_NO_SYMBOL, 500)
        return {"rt_cd": "0", "msg_cd": MSG_OK[0], "msg1": MSG_OK[1], "output": dict(output)}

    # --- candles -------------------------------------------------------------------------

    @staticmethod
    def _ok(**outputs) -> dict:
        return {"rt_cd": "0", "msg_cd": MSG_OK[0], "msg1": MSG_OK[1], **outputs}

    def daily_candles(self, *, query, **_):
        symbol = query.get("FID_INPUT_ISCD", "")
        try:
            start = dt.datetime.strptime(query.get("FID_INPUT_DATE_1", ""), "%Y%m%d").date()
            end = dt.datetime.strptime(query.get("FID_INPUT_DATE_2", ""), "%Y%m%d").date()
        except ValueError:
            raise _fail(("OPSQ2002", "FID_INPUT_DATE 값을 확인해 주십시오."), 500) from None
        if query.get("FID_PERIOD_DIV_CODE") not in ("D", "W", "M", "Y"):
            raise _fail(("OPSQ2001", "FID_PERIOD_DIV_CODE 값을 확인해 주십시오."), 500)
        rows = self.state.daily_rows(symbol, start, end)
        page, more = rows[: kc.DAILY_CANDLES_PER_CALL], len(rows) > kc.DAILY_CANDLES_PER_CALL
        output2 = [
            {
                "stck_bsop_date": d.strftime("%Y%m%d"),
                "stck_oprc": str(o),
                "stck_hgpr": str(h),
                "stck_lwpr": str(lo),
                "stck_clpr": str(c),
                "acml_vol": str(v),
                "acml_tr_pbmn": str(c * v),
            }
            for d, o, h, lo, c, v in page
        ]
        output1 = {"stck_shrn_iscd": symbol, "stck_prpr": output2[0]["stck_clpr"] if page else ""}
        return _Answer(
            200, self._ok(output1=output1, output2=output2), {"tr_cont": "M" if more else "D"}
        )

    def _minute_answer(self, query, day: dt.date, per_call: int):
        symbol = query.get("FID_INPUT_ISCD", "")
        text = query.get("FID_INPUT_HOUR_1", "")
        try:
            until = dt.datetime.strptime(text, "%H%M%S").time()
        except ValueError:
            raise _fail(("OPSQ2002", "FID_INPUT_HOUR_1 값을 확인해 주십시오."), 500) from None
        rows = self.state.minute_rows(symbol, day, until)
        page, more = rows[:per_call], len(rows) > per_call
        output2 = [
            {
                "stck_bsop_date": day.strftime("%Y%m%d"),
                "stck_cntg_hour": t.strftime("%H%M%S"),
                "stck_prpr": str(c),
                "stck_oprc": str(o),
                "stck_hgpr": str(h),
                "stck_lwpr": str(lo),
                "cntg_vol": str(v),
                "acml_tr_pbmn": str(c * v),
            }
            for t, o, h, lo, c, v in page
        ]
        return _Answer(
            200, self._ok(output1={}, output2=output2), {"tr_cont": "M" if more else "D"}
        )

    def minute_candles_today(self, *, query, **_):
        return self._minute_answer(query, dt.datetime.now(KST).date(), 30)

    def minute_candles_past(self, *, query, **_):
        try:
            day = dt.datetime.strptime(query.get("FID_INPUT_DATE_1", ""), "%Y%m%d").date()
        except ValueError:
            raise _fail(("OPSQ2002", "FID_INPUT_DATE_1 값을 확인해 주십시오."), 500) from None
        return self._minute_answer(query, day, 120)

    # --- account ----------------------------------------------------------------------------

    def _account(self, data: dict) -> None:
        if not (data.get("CANO", "").isdigit() and len(data["CANO"]) == 8):
            raise _fail(("OPSQ2000", "CANO 값을 확인해 주십시오."), 500)
        if not data.get("ACNT_PRDT_CD"):
            raise _fail(("OPSQ2000", "ACNT_PRDT_CD 값을 확인해 주십시오."), 500)

    def order_cash(self, *, body, headers, **_):
        self._account(body)
        if any(not isinstance(v, str) for v in body.values()) or any(k != k.upper() for k in body):
            raise _fail(("OPSQ2003", "입력 값은 대문자 키와 문자열 값이어야 합니다."), 500)
        tr_id = headers.get("tr_id", "")
        sides = {"TTTC0012U": "buy", "VTTC0012U": "buy", "TTTC0011U": "sell", "VTTC0011U": "sell"}
        if tr_id not in sides:
            raise _fail(MSG_NO_TR_ID, 500)
        side = sides[tr_id]
        symbol, ord_dvsn = body.get("PDNO", ""), body.get("ORD_DVSN", "")
        if ord_dvsn not in ("00", "01"):
            raise _fail(("APBK0500", "주문구분을 확인하여 주십시오."), 500)
        try:
            quantity = int(body.get("ORD_QTY", ""))
            price = Decimal(body.get("ORD_UNPR", ""))
        except (ValueError, ArithmeticError):
            raise _fail(MSG_BAD_QTY, 500) from None
        if quantity < 1:
            raise _fail(MSG_BAD_QTY, 500)
        with self.state.lock:
            if symbol not in self.state.prices:
                if not (self.state.generate_history and _is_code(symbol)):
                    raise _fail(MSG_NO_SYMBOL, 500)
                self.state.set_price(symbol, _base_price(symbol))
            current = Decimal(self.state.prices[symbol]["stck_prpr"])
            if ord_dvsn == "00":
                if price <= 0 or price % krx_tick(price):
                    raise _fail(MSG_OFF_TICK, 500)
            elif price != 0:
                raise _fail(("APBK0501", "시장가 주문은 주문단가가 0 이어야 합니다."), 500)
            cost = (price if ord_dvsn == "00" else current) * quantity
            if side == "buy" and cost > self.state.cash - self._reserved():
                raise _fail(MSG_INSUFFICIENT_CASH, 500)
            if side == "sell":
                held = self.state.positions.get(symbol, [0])[0]
                pending = sum(
                    o.remaining
                    for o in self.state.orders.values()
                    if o.side == "sell" and o.symbol == symbol
                )
                if quantity > held - pending:
                    raise _fail(("APBK0986", "주문가능수량을 초과 했습니다."), 500)
            now = dt.datetime.now(KST)
            odno = f"{self.state._next_odno:010d}"
            self.state._next_odno += 1
            self.state.orders[odno] = FakeOrder(
                odno=odno,
                org_no=self.state.branch,
                side=side,
                symbol=symbol,
                quantity=quantity,
                price=price,
                ord_dvsn=ord_dvsn,
                time=now,
            )
        return {
            "rt_cd": "0",
            "msg_cd": MSG_ORDER_OK[0],
            "msg1": MSG_ORDER_OK[1],
            "output": {
                "KRX_FWDG_ORD_ORGNO": self.state.branch,
                "ODNO": odno,
                "ORD_TMD": now.strftime("%H%M%S"),
            },
        }

    def _reserved(self) -> Decimal:
        return sum(
            (o.price * o.remaining for o in self.state.orders.values() if o.side == "buy"),
            Decimal(0),
        )

    def order_revise_cancel(self, *, body, **_):
        self._account(body)
        with self.state.lock:
            order = self.state.orders.get(body.get("ORGN_ODNO", ""))
            if order is None or body.get("KRX_FWDG_ORD_ORGNO") != order.org_no:
                raise _fail(MSG_NO_ORDER, 500)
            if body.get("RVSE_CNCL_DVSN_CD") != "02":
                raise _fail(("APBK0502", "정정은 지원하지 않습니다 (fake)."), 500)
            if order.remaining == 0:
                raise _fail(MSG_NOTHING_TO_CANCEL, 500)
            if body.get("QTY_ALL_ORD_YN") == "Y":
                quantity = order.remaining
            else:
                try:
                    quantity = int(body.get("ORD_QTY", ""))
                except ValueError:
                    raise _fail(MSG_BAD_QTY, 500) from None
                if not 1 <= quantity <= order.remaining:
                    raise _fail(MSG_NOTHING_TO_CANCEL, 500)
            order.cancelled += quantity
            now = dt.datetime.now(KST)
            odno = f"{self.state._next_odno:010d}"
            self.state._next_odno += 1
        return {
            "rt_cd": "0",
            "msg_cd": MSG_CANCEL_OK[0],
            "msg1": MSG_CANCEL_OK[1],
            "output": {
                "KRX_FWDG_ORD_ORGNO": order.org_no,
                "ODNO": odno,
                "ORD_TMD": now.strftime("%H%M%S"),
            },
        }

    def _paged(self, rows: list, query: dict, headers: dict, size: int):
        """The page of `rows` that CTX_AREA_NK100 points at (an offset here) and the answer's
        ctx / tr_cont fields."""
        offset = 0
        if headers.get("tr_cont") == "N":
            nk = query.get("CTX_AREA_NK100", "").strip()
            if not nk.isdigit():
                raise _fail(("OPSQ2004", "CTX_AREA_NK100 값을 확인해 주십시오."), 500)
            offset = int(nk)
        page = rows[offset : offset + size]
        more = offset + size < len(rows)
        ctx = {
            "ctx_area_fk100": query.get("CANO", "") + "^",
            "ctx_area_nk100": str(offset + size) if more else str(offset),
        }
        return page, ctx, ("M" if more or self.state.more_on_last_page else "D")

    def cancellable_orders(self, *, query, headers, **_):
        self._account(query)
        if headers.get("tr_id") != "TTTC0084R":
            raise _fail(("OPSQ0002", "모의투자에서는 해당업무가 제공되지 않습니다."), 500)
        with self.state.lock:
            rows = [
                {
                    "ord_gno_brno": o.org_no,
                    "odno": o.odno,
                    "orgn_odno": "",
                    "pdno": o.symbol,
                    "prdt_name": o.symbol,
                    "sll_buy_dvsn_cd": "02" if o.side == "buy" else "01",
                    "ord_qty": str(o.quantity),
                    "ord_unpr": str(o.price),
                    "ord_tmd": o.time.strftime("%H%M%S"),
                    "tot_ccld_qty": str(o.filled),
                    "psbl_qty": str(o.remaining),
                    "ord_dvsn_cd": o.ord_dvsn,
                }
                for o in self.state.orders.values()
                if o.remaining > 0
            ]
        page, ctx, more = self._paged(rows, query, headers, self.state.fills_page_size)
        return _Answer(200, self._ok(output=page, **ctx), {"tr_cont": more})

    def daily_fills(self, *, query, headers, **_):
        self._account(query)
        try:
            start = dt.datetime.strptime(query.get("INQR_STRT_DT", ""), "%Y%m%d").date()
            end = dt.datetime.strptime(query.get("INQR_END_DT", ""), "%Y%m%d").date()
        except ValueError:
            raise _fail(
                ("OPSQ2002", "INQR_STRT_DT / INQR_END_DT 값을 확인해 주십시오."), 500
            ) from None
        with self.state.lock:
            rows = []
            for o in self.state.orders.values():
                if not start <= o.time.date() <= end:
                    continue
                rows.append(
                    {
                        "ord_dt": o.time.strftime("%Y%m%d"),
                        "ord_gno_brno": o.org_no,
                        "odno": o.odno,
                        "orgn_odno": "",
                        "sll_buy_dvsn_cd": "02" if o.side == "buy" else "01",
                        "pdno": o.symbol,
                        "prdt_name": o.symbol,
                        "ord_qty": str(o.quantity),
                        "ord_unpr": str(o.price),
                        "ord_tmd": o.time.strftime("%H%M%S"),
                        "tot_ccld_qty": str(o.filled),
                        "avg_prvs": str(
                            (o.fill_amount / o.filled).quantize(Decimal(1)) if o.filled else 0
                        ),
                        "tot_ccld_amt": str(o.fill_amount),
                        "rmn_qty": str(o.remaining),
                        "cncl_yn": "Y" if o.cancelled else "N",
                        "cncl_cfrm_qty": str(o.cancelled),
                        "rjct_qty": "0",
                    }
                )
            rows.reverse()  # newest first, as KIS lists them
            total_qty = sum(o.filled for o in self.state.orders.values())
        page, ctx, more = self._paged(rows, query, headers, self.state.fills_page_size)
        summary = {
            "tot_ord_qty": str(sum(int(r["ord_qty"]) for r in rows)),
            "tot_ccld_qty": str(total_qty),
        }
        return _Answer(200, self._ok(output1=page, output2=summary, **ctx), {"tr_cont": more})

    def balance(self, *, query, headers, **_):
        self._account(query)
        with self.state.lock:
            rows = []
            stock_value = Decimal(0)
            for symbol, (quantity, average) in sorted(self.state.positions.items()):
                price = Decimal(
                    self.state.prices.get(symbol, {}).get("stck_prpr", average) or average
                )
                value = price * quantity
                stock_value += value
                pending = sum(
                    o.remaining
                    for o in self.state.orders.values()
                    if o.side == "sell" and o.symbol == symbol
                )
                rows.append(
                    {
                        "pdno": symbol,
                        "prdt_name": symbol,
                        "hldg_qty": str(quantity),
                        "ord_psbl_qty": str(quantity - pending),
                        "pchs_avg_pric": f"{average:.4f}",
                        "pchs_amt": str((average * quantity).quantize(Decimal(1))),
                        "prpr": str(price),
                        "evlu_amt": str(value),
                        "evlu_pfls_amt": str((value - average * quantity).quantize(Decimal(1))),
                    }
                )
            cash = self.state.cash
        page, ctx, more = self._paged(rows, query, headers, self.state.balance_page_size)
        summary = [
            {
                "dnca_tot_amt": str(cash),
                "prvs_rcdl_excc_amt": str(cash),
                "scts_evlu_amt": str(stock_value),
                "tot_evlu_amt": str(cash + stock_value),
                "nass_amt": str(cash + stock_value),
            }
        ]
        return _Answer(200, self._ok(output1=page, output2=summary, **ctx), {"tr_cont": more})


class _Drop(Exception):
    pass


def _generated_candle(symbol: str, salt: str) -> tuple:
    """(open, high, low, close, volume): on the KRX tick grid, the same for the same input."""
    base = _base_price(symbol)
    digest = hashlib.sha256(f"{symbol}|{salt}".encode()).digest()
    tick = krx_tick(base)
    o = base + tick * (digest[0] % 21 - 10)
    c = base + tick * (digest[1] % 21 - 10)
    h = max(o, c) + tick * (digest[2] % 4)
    lo = min(o, c) - tick * (digest[3] % 4)
    return o, h, lo, c, 1000 + int.from_bytes(digest[4:7], "big") % 100_000


def _is_code(symbol: str) -> bool:
    return len(symbol) == 6 and symbol.isalnum() and symbol.upper() == symbol


def _base_price(symbol: str) -> Decimal:
    """A deterministic, on-tick price for a symbol (10,000 .. 109,900 KRW)."""
    digest = int(hashlib.sha256(symbol.encode()).hexdigest()[:8], 16)
    return Decimal(10_000 + (digest % 1000) * 100)


class FakeKISServer:
    """The fake on 127.0.0.1:<free port>, in a daemon thread. Use as a context manager, or
    start() / stop()."""

    def __init__(self, state: FakeKISState | None = None, *, host: str = "127.0.0.1"):
        self.state = state or FakeKISState()
        self.app = FakeKISApp(self.state)
        self.host = host
        self._server = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{kc.WS_PATH}"

    def start(self) -> FakeKISServer:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, 0))
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            # uvicorn's own logging config (dictConfig) would close every existing handler,
            # system_logs' included, for the rest of the test session.
            log_config=None,
            access_log=False,
            lifespan="off",
            ws_ping_interval=None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
            name="fake-kis",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake KIS server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()

    def __enter__(self) -> FakeKISServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
