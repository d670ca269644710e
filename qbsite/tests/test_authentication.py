"""RoleTokenAuthentication: the token, its user and the user's role groups in one query, and
nothing remembered between requests."""

from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from qbsite.roles import CLIENT_GROUP, TRADER_GROUP


def test_a_role_change_applies_to_the_next_request(trader, api_client_for):
    api = api_client_for(trader)
    assert api.get("/api/v1/users/me/").data["role"] == "trader"
    trader.groups.remove(Group.objects.get(name=TRADER_GROUP))
    assert api.get("/api/v1/users/me/").status_code == 403  # no role left: a stranger
    trader.groups.add(Group.objects.get_or_create(name=CLIENT_GROUP)[0])
    assert api.get("/api/v1/users/me/").data["role"] == "client"


def test_a_revoked_token_and_an_inactive_user_are_refused(trader, api_client_for):
    api = api_client_for(trader)
    assert api.get("/api/v1/stocks/").status_code == 200
    trader.is_active = False
    trader.save(update_fields=["is_active"])
    refused = api.get("/api/v1/stocks/")
    assert refused.status_code == 401
    assert "inactive" in str(refused.data["detail"])
    trader.is_active = True
    trader.save(update_fields=["is_active"])
    Token.objects.filter(user=trader).delete()
    assert api.get("/api/v1/stocks/").status_code == 401


def test_an_unknown_token_is_401(api_client_for, db):
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    response = api.get("/api/v1/stocks/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
