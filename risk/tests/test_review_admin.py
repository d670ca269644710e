"""Review of the admin's trading state control: after the change it goes back only to a page
of this site (a crafted form must not send the operator to another site from our admin)."""

import pytest
from django.test import Client

from risk.models import TradingState

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        ("https://evil.example/admin/", "/admin/"),
        ("//evil.example/", "/admin/"),
        ("/admin/risk/tradingstatechange/", "/admin/risk/tradingstatechange/"),
    ],
)
def test_the_state_buttons_return_only_to_this_site(operator, redis_client, next_url, lands_on):
    client = Client()
    client.force_login(operator)
    answer = client.post(
        "/admin/risk/tradingstate/set/", {"state": "REDUCING", "reason": "vol", "next": next_url}
    )
    assert answer.status_code == 302
    assert answer.url == lands_on
    assert TradingState.objects.get().state == "REDUCING"
