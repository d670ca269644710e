"""Users (object-level permissions) and the token endpoint."""

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import PASSWORD
from qbsite.roles import Role, role_of

pytestmark = pytest.mark.django_db


def _role(user):
    return role_of(User.objects.get(pk=user.pk))


# --- who sees whom ---------------------------------------------------------------------------


def test_operator_lists_everyone_with_their_role(personas, superuser, api_client_for):
    response = api_client_for(personas["operator"]).get("/api/v1/users/")
    assert response.status_code == 200
    roles = {row["username"]: row["role"] for row in response.data["results"]}
    assert roles == {
        "olivia-operator": "operator",
        "tom-trader": "trader",
        "cora-client": "client",
        "sid-stranger": None,
        "sam-super": "operator",
    }


@pytest.mark.parametrize("role", ["trader", "client"])
def test_trader_and_client_see_only_themselves(role, personas, api_client_for):
    me = personas[role]
    api = api_client_for(me)
    listing = api.get("/api/v1/users/")
    assert [row["username"] for row in listing.data["results"]] == [me.username]
    assert listing.data["results"][0]["role"] == role
    assert api.get(f"/api/v1/users/{personas['operator'].pk}/").status_code == 404
    assert api.get(f"/api/v1/users/{me.pk}/").status_code == 200


@pytest.mark.parametrize("role", ["operator", "trader", "client"])
def test_me(role, personas, api_client_for):
    response = api_client_for(personas[role]).get("/api/v1/users/me/")
    assert response.status_code == 200
    assert response.data["username"] == personas[role].username
    assert response.data["role"] == role


def test_users_list_query_count_does_not_grow_with_users(
    operator, django_assert_num_queries, api_client_for
):
    for i in range(30):
        User.objects.create_user(f"user{i}", password="x")
    api = api_client_for(operator)
    # token + user, COUNT, the page, the page's groups (one prefetch, not one per user).
    with django_assert_num_queries(4):
        response = api.get("/api/v1/users/")
    assert response.status_code == 200
    assert response.data["count"] == 31


# --- own profile ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["trader", "client"])
def test_trader_and_client_edit_their_own_profile(role, personas, api_client_for):
    me = personas[role]
    response = api_client_for(me).patch(
        f"/api/v1/users/{me.pk}/",
        {"first_name": "Tom", "last_name": "Kim", "email": "tom@example.kr"},
        format="json",
    )
    assert response.status_code == 200, response.data
    me.refresh_from_db()
    assert (me.first_name, me.last_name, me.email) == ("Tom", "Kim", "tom@example.kr")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"is_staff": True}, "is_staff"),
        ({"is_superuser": True}, "is_superuser"),
        ({"groups": [1]}, "groups"),
        ({"role": "operator"}, "role"),
        ({"username": "someone-else"}, "username"),
    ],
)
def test_trader_cannot_raise_itself(payload, field, trader, api_client_for):
    api = api_client_for(trader)
    for url in (f"/api/v1/users/{trader.pk}/", "/api/v1/users/me/"):
        response = api.patch(url, payload, format="json")
        assert response.status_code == 400
        assert field in response.data
    trader.refresh_from_db()
    assert not trader.is_staff and not trader.is_superuser
    assert _role(trader) is Role.TRADER
    assert trader.username == "tom-trader"


def test_a_get_put_round_trip_is_accepted(trader, api_client_for):
    """Read-only fields sent back unchanged (role, username, ...) are not an attempt to write."""
    api = api_client_for(trader)
    body = api.get("/api/v1/users/me/").data
    body["first_name"] = "Tom"
    response = api.put(f"/api/v1/users/{trader.pk}/", body, format="json")
    assert response.status_code == 200, response.data
    assert response.data["first_name"] == "Tom"


def test_bad_email_is_a_field_error(trader, api_client_for):
    response = api_client_for(trader).patch(
        "/api/v1/users/me/", {"email": "not-an-address"}, format="json"
    )
    assert response.status_code == 400
    assert "email" in response.data


def test_trader_cannot_edit_another_user(trader, client_user, api_client_for):
    response = api_client_for(trader).patch(
        f"/api/v1/users/{client_user.pk}/", {"first_name": "X"}, format="json"
    )
    assert response.status_code == 404
    client_user.refresh_from_db()
    assert client_user.first_name == ""


# --- roles, by operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_role", "staff"),
    [("operator", True), ("trader", False), ("client", False), (None, False)],
)
def test_operator_sets_any_role(new_role, staff, operator, client_user, api_client_for):
    response = api_client_for(operator).patch(
        f"/api/v1/users/{client_user.pk}/", {"role": new_role}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data["role"] == new_role
    client_user.refresh_from_db()
    assert client_user.is_staff is staff
    assert _role(client_user) == (Role(new_role) if new_role else None)
    # Only the role's group remains (no stale client group beside trader).
    expected_groups = {new_role} if new_role in ("trader", "client") else set()
    assert set(client_user.groups.values_list("name", flat=True)) == expected_groups


def test_role_change_takes_effect_on_the_next_request(operator, trader, api_client_for):
    api_client_for(operator).patch(f"/api/v1/users/{trader.pk}/", {"role": None}, format="json")
    assert api_client_for(trader).get("/api/v1/stocks/").status_code == 403


def test_unknown_role_is_a_field_error(operator, trader, api_client_for):
    response = api_client_for(operator).patch(
        f"/api/v1/users/{trader.pk}/", {"role": "admin"}, format="json"
    )
    assert response.status_code == 400
    assert "role" in response.data


def test_operator_cannot_change_own_role(operator, api_client_for):
    response = api_client_for(operator).patch(
        "/api/v1/users/me/", {"role": "client"}, format="json"
    )
    assert response.status_code == 409
    assert "own role" in response.data["detail"]
    assert _role(operator) is Role.OPERATOR


def test_superuser_role_is_not_changed_through_the_api(operator, superuser, api_client_for):
    response = api_client_for(operator).patch(
        f"/api/v1/users/{superuser.pk}/", {"role": "client"}, format="json"
    )
    assert response.status_code == 409
    assert _role(superuser) is Role.OPERATOR


# --- token ----------------------------------------------------------------------------------


def test_token_for_username_and_password(trader):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "tom-trader", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert response.data["token"] == Token.objects.get(user=trader).key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {response.data['token']}")
    assert api.get("/api/v1/users/me/").data["username"] == "tom-trader"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "tom-trader", "password": "wrong"}, "non_field_errors"),
        ({"username": "nobody", "password": PASSWORD}, "non_field_errors"),
        ({"username": "tom-trader"}, "password"),
        ({}, "username"),
    ],
)
def test_token_refused(payload, field, trader):
    response = APIClient().post("/api/v1/auth/token/", payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert "token" not in response.data


def test_token_ignores_a_stale_authorization_header(trader):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = api.post(
        "/api/v1/auth/token/", {"username": "tom-trader", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200


def test_bad_token_is_401(db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = api.get("/api/v1/stocks/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
