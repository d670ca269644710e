"""Errors from the KIS Open API, as QBError subclasses.

    KISError            rt_cd != "0" (msg_cd / msg1 from KIS) or an answer we cannot read
      KISRateLimited    EGW00201: the per-second limit (the client retries it)
      KISUnavailable    5xx, timeouts, refused or dropped connections (the client retries it)
      KISAuthError      token / app key refused (401/403, EGW0012x)
      KISNotSupported   a call KIS does not offer in this environment (virtual accounts)

Messages name the call (path, TR id) and KIS's msg_cd / msg1; they never contain an app key,
secret, token or account number.
"""

from __future__ import annotations

from qbsite.exceptions import QBError


class KISError(QBError):
    status_code = 502  # an upstream failure, as the API reports it
    code = "kis_error"

    def __init__(
        self,
        message: str,
        *,
        msg_cd: str = "",
        msg1: str = "",
        http_status: int | None = None,
        tr_id: str = "",
        path: str = "",
    ):
        super().__init__(
            message,
            details={
                k: v
                for k, v in (
                    ("msg_cd", msg_cd),
                    ("msg1", msg1),
                    ("http_status", http_status),
                    ("tr_id", tr_id),
                )
                if v
            },
        )
        self.msg_cd = msg_cd
        self.msg1 = msg1
        self.http_status = http_status
        self.tr_id = tr_id
        self.path = path

    @classmethod
    def from_answer(cls, body: dict, *, http_status: int, tr_id: str, path: str) -> KISError:
        """The error for a KIS answer with rt_cd != "0" (the right subclass)."""
        from kis.config import MSG_RATE_LIMITED, TOKEN_MSG_CODES

        msg_cd = str(body.get("msg_cd") or body.get("error_code") or "")
        msg1 = str(body.get("msg1") or body.get("error_description") or "").strip()
        kind = KISError
        if msg_cd == MSG_RATE_LIMITED:
            kind = KISRateLimited
        elif msg_cd in TOKEN_MSG_CODES or http_status in (401, 403):
            kind = KISAuthError
        elif http_status >= 500 and not msg_cd:
            kind = KISUnavailable
        where = f"{path} ({tr_id})" if tr_id else path
        text = f"KIS refused {where}: {msg_cd or 'no code'} {msg1 or '(no message)'}"
        if http_status != 200:
            text += f" [HTTP {http_status}]"
        return kind(text, msg_cd=msg_cd, msg1=msg1, http_status=http_status, tr_id=tr_id, path=path)


class KISRateLimited(KISError):
    code = "kis_rate_limited"


class KISUnavailable(KISError):
    code = "kis_unavailable"


class KISAuthError(KISError):
    code = "kis_auth"


class KISNotSupported(KISError):
    code = "kis_not_supported"
