"""The quote fast path (marketdata/fastquote.py) against Django's own answer to the same request.

Every request goes through the project's ASGI application (qbsite.asgi), as a server sends it.
The fast path must answer the plain case with exactly the bytes the DRF view gives, and hand
every other case to Django, whose answer must then be what it always was.
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from marketdata.fastquote import close_resources
from marketdata.keys import quote_key
from marketdata.selectors import known_symbols_clear
from qbsite.asgi import application
from qbsite.tests.api_factories import make_stock

pytestmark = pytest.mark.django_db(transaction=True)

QUOTE = {
    "timestamp": "2024-05-02T00:05:07Z",
    "open": "70000",
    "high": "70500",
    "low": "69900",
    "close": "70200",
    "volume": "123456",
    "prev_close": "69800",
    "change": "400",
    "change_rate": "0.57",
    "upper_limit": "90700",
    "lower_limit": "",
}
URL = "/api/v1/quotes/005930/"


@pytest.fixture(autouse=True)
def world(redis_client):
    known_symbols_clear()
    make_stock("005930", "Samsung Electronics", "KOSPI")
    redis_client.hset(quote_key("005930"), mapping=QUOTE)
    yield
    known_symbols_clear()


def token_of(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


async def get(path=URL, *, token=None, host=b"testserver", extra=()):
    headers = [(b"host", host), *extra]
    if token:
        headers.append((b"authorization", f"Token {token}".encode()))
    query = b""
    if "?" in path:
        path, query = path.split("?", 1)
        query = query.encode()
    communicator = HttpCommunicator(application, "GET", path, headers=headers)
    communicator.scope["query_string"] = query
    try:
        response = await communicator.get_response(timeout=10)
    finally:
        await close_resources()
    response["headers"] = {key.lower(): value for key, value in response["headers"]}
    return response


def fast(response) -> bool:
    return response["headers"].get(b"x-qb-path") == b"fast"


async def slow_get(settings, **kwargs):
    """The same request with the fast path off: Django's own answer."""
    settings.QUOTE_FAST_PATH = False
    try:
        return await get(**kwargs)
    finally:
        settings.QUOTE_FAST_PATH = True


@pytest.mark.parametrize("persona", ["operator", "trader", "client"])
async def test_the_plain_case_is_answered_fast_with_the_views_bytes(persona, personas, settings):
    token = await sync_to_async(token_of)(personas[persona])
    quick = await get(token=token)
    assert quick["status"] == 200 and fast(quick)
    django = await slow_get(settings, token=token)
    assert django["status"] == 200 and not fast(django)
    assert quick["body"] == django["body"]
    for header in (
        b"content-type",
        b"x-frame-options",
        b"x-content-type-options",
        b"referrer-policy",
        b"cross-origin-opener-policy",
        b"vary",
        b"allow",
    ):
        assert quick["headers"][header] == django["headers"][header], header


async def test_refusals_are_djangos_answers(personas, settings, redis_client):
    stranger = await sync_to_async(token_of)(personas["stranger"])
    client = await sync_to_async(token_of)(personas["client"])
    cases = [
        {"token": None},  # anonymous: 401
        {"token": "0" * 40},  # no such token: 401
        {"token": stranger},  # no role: 403
        {"token": client, "path": "/api/v1/quotes/999999/"},  # unknown symbol: 404
        {"token": client, "path": "/api/v1/quotes/000660/"},  # no quote: 404 (unknown too)
        {"token": client, "path": URL + "?format=json"},  # not the plain case
        {"token": client, "host": b"evil.example"},  # a host not allowed: 400
    ]
    for case in cases:
        answer = await get(**case)
        assert not fast(answer), case
        django = await slow_get(settings, **case)
        assert (answer["status"], answer["body"]) == (django["status"], django["body"]), case
        assert answer["status"] in (400, 401, 403, 404) or case.get("path", "").endswith("json")


async def test_a_known_symbol_without_a_quote_goes_to_django(personas, redis_client):
    await sync_to_async(make_stock)("000660", "SK hynix", "KOSPI")
    client = await sync_to_async(token_of)(personas["client"])
    answer = await get(token=client, path="/api/v1/quotes/000660/")
    assert answer["status"] == 404 and not fast(answer)


async def test_an_inactive_user_goes_to_django(personas):
    trader = personas["trader"]
    token = await sync_to_async(token_of)(trader)
    await User.objects.filter(pk=trader.pk).aupdate(is_active=False)
    answer = await get(token=token)
    assert answer["status"] == 401 and not fast(answer)


async def test_the_throttle_counts_fast_requests_and_django_refuses_the_excess(
    personas, settings, redis_client
):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "user": "2/min"},
    }
    trader = personas["trader"]
    token = await sync_to_async(token_of)(trader)
    first, second, third = [await get(token=token) for _ in range(3)]
    assert [first["status"], second["status"]] == [200, 200]
    assert fast(first) and fast(second)
    assert third["status"] == 429 and not fast(third)
    # One counter for both paths: the view's key, counted by each.
    assert int(redis_client.get(f"throttle:user:{trader.pk}")) >= 3


async def test_it_can_be_turned_off(personas, settings):
    token = await sync_to_async(token_of)(personas["client"])
    answer = await slow_get(settings, token=token)
    assert answer["status"] == 200 and not fast(answer)


async def test_requests_that_would_be_redirected_to_https_stay_with_django(personas, settings):
    settings.SECURE_SSL_REDIRECT = True
    token = await sync_to_async(token_of)(personas["client"])
    plain = await get(token=token)
    assert not fast(plain)  # Django's SecurityMiddleware decides (it redirects when it is on)
    secure = await get(token=token, extra=[(b"x-forwarded-proto", b"https")])
    assert not fast(secure)  # no proxy header configured: still plain http to Django
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind_proxy = await get(token=token, extra=[(b"x-forwarded-proto", b"https")])
    assert behind_proxy["status"] == 200 and fast(behind_proxy)
