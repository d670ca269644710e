"""Settings for the test suite: the same as production code paths, ENVIRONMENT=test."""

import os

os.environ["ENVIRONMENT"] = "test"

from qbsite.settings import *  # noqa: F403
