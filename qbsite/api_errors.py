"""Turns errors into API answers: a 4xx with a message, never a 500 on bad input.

- QBError (services): its status and message, e.g. 409 "Stock 005930 has trades ...".
- Django's ValidationError (a service's full_clean()): 400 with the same field-level shape
  as a serializer's errors.
- IntegrityError: a safety net for races the services cannot see (two requests creating the
  same row at once): 409, without the SQL.
"""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from qbsite.exceptions import QBError

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    if isinstance(exc, QBError):
        set_rollback()
        body = {"detail": exc.message, "code": exc.code}
        if exc.details:
            body["details"] = exc.details
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, IntegrityError):
        logger.warning("API request hit a database constraint: %s", exc)
        set_rollback()
        return Response(
            {
                "detail": "The change conflicts with data stored meanwhile; reload and retry.",
                "code": "conflict",
            },
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
