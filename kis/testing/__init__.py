"""Test helpers for code that talks to KIS: the fake KIS server and pytest fixtures.

    from kis import testing as kis_testing     # in a conftest.py or a test module
    fake_kis = kis_testing.fake_kis
    kis_settings = kis_testing.kis_settings

`fake_kis`: a running FakeKISServer (kis.testing.fake_server) for one test; `fake_kis.state`
is its FakeKISState (prices, candles, orders, faults, issued tokens, recorded requests).
`kis_settings`: Django settings pointing the KIS_* variables at that server (real
environment, test credentials, account 12345678-01), so `KISConfig.from_settings()` and the
management commands talk to the fake.
"""

from __future__ import annotations

import pytest

from kis.testing.fake_server import FakeKISServer, FakeKISState

TEST_APP_KEY = "PStestAppKey0123456789abcdef"
TEST_APP_SECRET = "testAppSecret/0123456789+abcdefghijklmnopqrstuvwxyz="
TEST_ACCOUNT = "12345678-01"
TEST_HTS_ID = "qbtester"

__all__ = [
    "TEST_ACCOUNT",
    "TEST_APP_KEY",
    "TEST_APP_SECRET",
    "TEST_HTS_ID",
    "FakeKISServer",
    "FakeKISState",
    "fake_kis",
    "kis_settings",
]


@pytest.fixture
def fake_kis():
    """A fake KIS server (REST + WebSocket) on a loopback port, accepting the test keys."""
    state = FakeKISState(app_key=TEST_APP_KEY, app_secret=TEST_APP_SECRET)
    with FakeKISServer(state) as server:
        yield server


@pytest.fixture
def kis_settings(settings, fake_kis):
    """settings.KIS_* aimed at `fake_kis` (the pytest-django `settings` fixture undoes it)."""
    settings.KIS_ENV = "real"
    settings.KIS_APP_KEY = TEST_APP_KEY
    settings.KIS_APP_SECRET = TEST_APP_SECRET
    settings.KIS_ACCOUNT = TEST_ACCOUNT
    settings.KIS_HTS_ID = TEST_HTS_ID
    settings.KIS_REST_URL = fake_kis.rest_url
    settings.KIS_WS_URL = fake_kis.ws_url
    settings.KIS_RATE_LIMIT_PER_SECOND = None
    return settings
