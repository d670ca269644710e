"""The fake KIS server itself: it answers as KIS does (checked with plain httpx)."""

import httpx

from kis import config as kc
from kis.testing import TEST_APP_KEY, TEST_APP_SECRET


def token(fake) -> str:
    answer = httpx.post(
        fake.rest_url + kc.PATH_TOKEN,
        json={
            "grant_type": "client_credentials",
            "appkey": TEST_APP_KEY,
            "appsecret": TEST_APP_SECRET,
        },
    )
    assert answer.status_code == 200
    return answer.json()["access_token"]


def headers(token: str, tr_id: str) -> dict:
    return {
        "authorization": f"Bearer {token}",
        "appkey": TEST_APP_KEY,
        "appsecret": TEST_APP_SECRET,
        "tr_id": tr_id,
        "custtype": "P",
    }


def test_token_then_a_quote(fake_kis):
    fake_kis.state.set_price("005930", 71500)
    first = token(fake_kis)
    assert token(fake_kis) == first  # the same token within 6 h
    assert fake_kis.state.token_issuances == 1
    answer = httpx.get(
        fake_kis.rest_url + kc.PATH_PRICE,
        params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        headers=headers(first, "FHKST01010100"),
    )
    body = answer.json()
    assert answer.status_code == 200 and body["rt_cd"] == "0"
    assert body["output"]["stck_prpr"] == "71500"


def test_a_wrong_secret_and_a_bad_token_are_refused(fake_kis):
    answer = httpx.post(
        fake_kis.rest_url + kc.PATH_TOKEN,
        json={"grant_type": "client_credentials", "appkey": TEST_APP_KEY, "appsecret": "no"},
    )
    assert answer.status_code == 403
    assert answer.json()["error_code"] == "EGW00105"
    answer = httpx.get(
        fake_kis.rest_url + kc.PATH_PRICE,
        params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        headers=headers("made-up", "FHKST01010100"),
    )
    assert answer.json()["msg_cd"] == kc.MSG_TOKEN_INVALID


def test_approval_key_uses_secretkey(fake_kis):
    answer = httpx.post(
        fake_kis.rest_url + kc.PATH_APPROVAL,
        json={
            "grant_type": "client_credentials",
            "appkey": TEST_APP_KEY,
            "secretkey": TEST_APP_SECRET,
        },
    )
    key = answer.json()["approval_key"]
    assert key in fake_kis.state.approval_keys
