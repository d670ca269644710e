"""Settings for the test suite: the same as production code paths, ENVIRONMENT=test."""

import os

os.environ["ENVIRONMENT"] = "test"

from qbsite.settings import *  # noqa: F403

# Every test makes its personas; PBKDF2's million rounds per user would dominate the suite.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Async tests that send requests through the ASGI application (qbsite.asgi) leave each request's
# thread-bound connection checked out of the pool until the test's end (servers return it at
# request end; the bench's thousands of requests show it). Room for a test's dozen requests.
_pool = DATABASES["default"]["OPTIONS"].get("pool")  # noqa: F405
if _pool:
    _pool["max_size"] = max(_pool["max_size"], 24)
