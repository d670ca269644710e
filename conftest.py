"""Fixtures shared by every app's tests: the personas and a clean Redis test database.

Tests run against real PostgreSQL and Redis (qbsite.settings_test keeps Redis on its own
database number, REDIS_TEST_DB, 15 by default).
"""

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from qbsite.roles import CLIENT_GROUP, TRADER_GROUP

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session", autouse=True)
def _system_logs_closed_before_teardown(django_db_setup):
    """The system_logs writer holds its own connection to the test database; it must be gone
    before pytest-django drops that database."""
    yield
    from ops.logging import close_all_handlers

    close_all_handlers()


@pytest.fixture
def redis_client(settings):
    """A redis-py client on the test database, flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _user(username: str, *, staff: bool = False, group: str | None = None) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=staff)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def operator(db):
    return _user("olivia-operator", staff=True)


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("sam-super", "sam@example.com", PASSWORD)


@pytest.fixture
def trader(db):
    return _user("tom-trader", group=TRADER_GROUP)


@pytest.fixture
def client_user(db):
    """The read-only client persona (named so as not to shadow pytest-django's `client`)."""
    return _user("cora-client", group=CLIENT_GROUP)


@pytest.fixture
def stranger(db):
    """Authenticated, but with no role."""
    return _user("sid-stranger")


@pytest.fixture
def personas(operator, trader, client_user, stranger):
    return {"operator": operator, "trader": trader, "client": client_user, "stranger": stranger}


@pytest.fixture
def api_client_for():
    """api_client_for(user): an APIClient with that user's token (None = anonymous)."""

    def make(user):
        api = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api

    return make
