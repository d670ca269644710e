"""QB's own exceptions: one base class, messages a person can act on.

Services raise these; the API turns them into 4xx answers with the same message
(qbsite/api_errors.py); engines log them to system_logs and go on.
"""


class QBError(Exception):
    """Base of every error QB raises on purpose."""

    status_code = 400
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class InvalidInput(QBError):
    code = "invalid"


class NotFound(QBError):
    status_code = 404
    code = "not_found"


class Conflict(QBError):
    status_code = 409
    code = "conflict"
