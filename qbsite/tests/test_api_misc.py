"""Cross-cutting API behaviour: bad input is a 400 (never a 500), throttling, the schema."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from conftest import PASSWORD

pytestmark = pytest.mark.django_db

CURSOR_LISTS = [
    ("/api/v1/market-data/", "time"),
    ("/api/v1/trades/", "timestamp"),
    ("/api/v1/risk-metrics/", "timestamp"),
    ("/api/v1/system-logs/", "timestamp"),
]
PAGE_LISTS = [
    "/api/v1/stocks/",
    "/api/v1/positions/",
    "/api/v1/strategy-performance/",
    "/api/v1/users/",
]


# --- bad query parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(("url", "time_field"), CURSOR_LISTS)
@pytest.mark.parametrize(
    ("suffix", "value", "says"),
    [
        ("_after", "garbage", "ISO 8601"),
        ("_before", "2024-13-45T25:00:00Z", "ISO 8601"),
        ("_after", "2024-05-02T09:00:00", "no timezone"),
        ("_before", "2024-05-02", "no timezone"),
    ],
)
def test_bad_time_filter_is_400(url, time_field, suffix, value, says, operator, api_client_for):
    param = time_field + suffix
    response = api_client_for(operator).get(url, {param: value})
    assert response.status_code == 400
    assert says in str(response.data[param][0])


@pytest.mark.parametrize(("url", "time_field"), CURSOR_LISTS)
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "e30",  # base64 of {}
        "eyJyIjpmYWxzZSwicCI6WzFdfQ",  # {"r":false,"p":[1]}: wrong number of values
        "bm90IGpzb24",  # "not json"
    ],
)
def test_bad_cursor_is_400(url, time_field, cursor, operator, api_client_for):
    response = api_client_for(operator).get(url, {"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.data


@pytest.mark.parametrize("url", [url for url, _ in CURSOR_LISTS] + PAGE_LISTS)
@pytest.mark.parametrize("page_size", ["abc", "0", "-3", "100000"])
def test_bad_page_size_is_400(url, page_size, operator, api_client_for):
    response = api_client_for(operator).get(url, {"page_size": page_size})
    assert response.status_code == 400
    assert "page_size" in response.data


@pytest.mark.parametrize("url", PAGE_LISTS)
def test_bad_page_is_400_and_a_page_past_the_end_404(url, operator, api_client_for):
    api = api_client_for(operator)
    assert api.get(url, {"page": "abc"}).status_code == 400
    assert api.get(url, {"page": "0"}).status_code == 400
    assert api.get(url, {"page": "999"}).status_code == 404


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/v1/market-data/", {"interval": "2x"}, "interval"),
        ("/api/v1/market-data/", {"symbol": "samsung"}, "symbol"),
        ("/api/v1/trades/", {"side": "HOLD"}, "side"),
        ("/api/v1/trades/", {"status": "LOST"}, "status"),
        ("/api/v1/positions/", {"open": "maybe"}, "open"),
        ("/api/v1/stocks/", {"market": "NYSE"}, "market"),
        ("/api/v1/system-logs/", {"level": "LOUD"}, "level"),
        ("/api/v1/strategy-performance/", {"date_after": "yesterday"}, "date"),
        ("/api/v1/users/", {"is_active": "perhaps"}, "is_active"),
    ],
)
def test_bad_filter_value_is_400_naming_the_filter(url, params, field, operator, api_client_for):
    response = api_client_for(operator).get(url, params)
    assert response.status_code == 400
    assert field in response.data


def test_unknown_ordering_is_ignored_not_an_error(operator, api_client_for):
    response = api_client_for(operator).get("/api/v1/stocks/", {"ordering": "password"})
    assert response.status_code == 200


# --- bad bodies ------------------------------------------------------------------------------


def test_malformed_json_is_400(operator, api_client_for):
    response = api_client_for(operator).post(
        "/api/v1/stocks/", '{"symbol": "000660",', content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.data["detail"]


@pytest.mark.parametrize("body", ["[1, 2]", '"a string"', "42", "null"])
def test_a_body_that_is_not_an_object_is_400(body, operator, api_client_for):
    response = api_client_for(operator).post(
        "/api/v1/market-data/", body, content_type="application/json"
    )
    assert response.status_code == 400


def test_unknown_body_field_is_named(operator, api_client_for):
    response = api_client_for(operator).post(
        "/api/v1/stocks/",
        {"symbol": "000660", "name": "SK hynix", "market": "KOSPI", "colour": "red"},
        format="json",
    )
    assert response.status_code == 400
    assert "colour" in response.data


# --- throttling (counted in Redis) ------------------------------------------------------------


@pytest.fixture
def low_rates(settings, redis_client):
    """Two anonymous and three user requests a minute. redis_client flushes the test Redis
    database (the cache, hence the throttle counters) before and after."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "2/min", "user": "3/min"},
    }
    return redis_client


def test_user_over_the_rate_gets_429(low_rates, trader, client_user, api_client_for):
    api = api_client_for(trader)
    assert [api.get("/api/v1/stocks/").status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get("/api/v1/stocks/")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    # Counted per user, in Redis through the cache.
    assert api_client_for(client_user).get("/api/v1/stocks/").status_code == 200
    assert low_rates.exists(f"throttle:user:{trader.pk}")


def test_token_endpoint_is_throttled_against_password_guessing(low_rates, trader):
    api = APIClient()
    attempts = [
        api.post("/api/v1/auth/token/", {"username": "tom-trader", "password": "guess"}).status_code
        for _ in range(3)
    ]
    assert attempts == [400, 400, 429]
    # The right password does not get through either until the window passes.
    right = api.post("/api/v1/auth/token/", {"username": "tom-trader", "password": PASSWORD})
    assert right.status_code == 429


# --- schema and docs --------------------------------------------------------------------------


def test_schema_is_valid_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for path in ("/api/v1/market-data/", "/api/v1/users/me/", "/api/v1/auth/token/"):
        assert f"{path}:" in text


def test_schema_and_docs_for_a_signed_in_user(client_user, api_client_for):
    api = api_client_for(client_user)
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == "QB API"
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_schema_and_docs_need_a_sign_in(db):
    api = APIClient()
    assert api.get("/api/schema/").status_code == 401
    assert api.get("/api/docs/").status_code == 401
