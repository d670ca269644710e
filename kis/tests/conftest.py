"""Fixtures of the kis tests: the fake KIS server (kis.testing), an async Redis on the test
database, and a KISConfig aimed at the fake."""

import pytest
import redis.asyncio

from kis import testing as kis_testing
from kis.config import KISConfig
from kis.testing import TEST_ACCOUNT, TEST_APP_KEY, TEST_APP_SECRET

fake_kis = kis_testing.fake_kis
kis_settings = kis_testing.kis_settings


@pytest.fixture
async def aredis(settings, redis_client):
    """redis.asyncio on the test database (redis_client flushes it before and after)."""
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def kis_config(fake_kis):
    """A real-environment config aimed at the fake (18 requests/s), quick backoff."""
    cano, _, product = TEST_ACCOUNT.partition("-")
    return KISConfig(
        env="real",
        app_key=TEST_APP_KEY,
        app_secret=TEST_APP_SECRET,
        rest_url=fake_kis.rest_url,
        ws_url=fake_kis.ws_url,
        cano=cano,
        product_code=product,
        timeout=5.0,
    )
