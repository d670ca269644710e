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
    path: str | None = None  # only requests to this path (None: any /uapi or /oauth2 path)


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
    ) -> None:
        """The next `count` matching requests fail: HTTP `status` with rt_cd "1" and the
        given msg_cd / msg1 (an empty msg_cd: a bare 5xx page), or a dropped connection."""
        with self.lock:
            for _ in range(count):
                self.faults.append(Fault(status, msg_cd, msg1, drop, path))

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
            fault = next((f for f in state.faults if f.path is None or f.path == path), None)
            if fault is not None:
                state.faults.remove(fault)
        try:
            if fault is not None:
                if fault.drop:
                    record["status"] = -1
                    raise _Drop
                if fault.msg_cd:
                    raise _fail((fault.msg_cd, fault.msg1), fault.status)
                raise _Answer(fault.status, {"error": "injected"})
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
            # No answer at all: uvicorn closes the connection when the app returns unanswered.
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


class _Drop(Exception):
    pass


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
