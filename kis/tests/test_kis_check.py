"""manage.py kis_check against the fake KIS server."""

import io

import pytest
from django.core.management import CommandError, call_command

from kis.testing import TEST_ACCOUNT, TEST_APP_KEY, TEST_APP_SECRET


def run(*args) -> str:
    out = io.StringIO()
    call_command("kis_check", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def assert_no_secret(text: str, fake) -> None:
    for secret in (TEST_APP_KEY, TEST_APP_SECRET, TEST_ACCOUNT.split("-")[0]):
        assert secret not in text
    for token in fake.state.tokens:
        assert token.token not in text


def test_good_credentials_print_what_was_found(kis_settings, fake_kis, redis_client):
    fake_kis.state.set_price("005930", 71500, prdy_vrss=500, prdy_ctrt="0.70", acml_vol=1000)
    out = run()
    assert "KIS environment: real" in out
    assert f"REST host: {fake_kis.rest_url}" in out
    assert "Access token: new, expires" in out and "KST" in out
    assert "005930: 71,500 KRW (+500, 0.70%), volume 1,000" in out
    assert "KIS check passed." in out
    assert_no_secret(out, fake_kis)

    again = run("--symbol", "000660")
    assert "Access token: cached" in again
    assert fake_kis.state.token_requests == 1


def test_a_wrong_secret_fails_with_kis_message(kis_settings, fake_kis, redis_client):
    kis_settings.KIS_APP_SECRET = "not-the-secret-at-all"
    with pytest.raises(CommandError) as failed:
        run()
    message = str(failed.value)
    assert "KIS check failed" in message and "EGW00105" in message
    assert "not-the-secret-at-all" not in message


def test_an_unknown_symbol_fails_with_kis_message(kis_settings, fake_kis, redis_client):
    fake_kis.state.generate_history = False
    with pytest.raises(CommandError, match="APBK1001"):
        run("--symbol", "999999")


def test_missing_credentials_name_the_variable(kis_settings, redis_client):
    kis_settings.KIS_APP_KEY = ""
    with pytest.raises(CommandError, match="KIS_APP_KEY is not set"):
        run()


def test_no_server_fails_cleanly(kis_settings, redis_client):
    kis_settings.KIS_REST_URL = "http://127.0.0.1:9"
    with pytest.raises(CommandError, match=r"KIS check failed: .*ConnectError"):
        run()
