"""Turns QB's exceptions into API answers: a 4xx with the message, never a 500 on bad input."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from qbsite.exceptions import QBError


def exception_handler(exc, context):
    if isinstance(exc, QBError):
        body = {"detail": exc.message, "code": exc.code}
        if exc.details:
            body["details"] = exc.details
        return Response(body, status=exc.status_code)
    return drf_exception_handler(exc, context)
