"""Settings for the test suite: the same as production code paths, ENVIRONMENT=test."""

import os

os.environ["ENVIRONMENT"] = "test"

from qbsite.settings import *  # noqa: F403

# Every test makes its personas; PBKDF2's million rounds per user would dominate the suite.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
