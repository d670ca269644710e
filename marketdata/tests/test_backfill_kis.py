"""manage.py backfill --source kis against the fake KIS server: idempotent, resumable."""

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from kis import testing as kis_testing
from marketdata.models import MarketData

# The fake KIS server's fixtures (kis.testing).
fake_kis = kis_testing.fake_kis
kis_settings = kis_testing.kis_settings

pytestmark = pytest.mark.django_db
KST = dt.timezone(dt.timedelta(hours=9))


def backfill(*args) -> str:
    out = io.StringIO()
    call_command(
        "backfill", "--source", "kis", *args, "--no-progress", stdout=out, stderr=io.StringIO()
    )
    return out.getvalue()


def kis_requests(fake, path_end: str) -> list[dict]:
    return [r for r in fake.state.requests if r["path"].endswith(path_end)]


def test_daily_history_loads_and_a_rerun_changes_nothing(kis_settings, fake_kis, redis_client):
    args = ("--symbol", "005930", "--start", "2024-01-01", "--end", "2024-12-31")
    out = backfill(*args)
    assert "005930 1d 2024-01-01..2024-12-31: 262 candles from KIS: 262 inserted" in out
    expected = fake_kis.state.daily_rows("005930", dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    stored = {
        r.time: (r.open, r.high, r.low, r.close, r.volume)
        for r in MarketData.objects.filter(symbol="005930", interval="1d")
    }
    assert stored == {
        dt.datetime.combine(d, dt.time(0), tzinfo=KST): (o, h, lo, c, v)
        for d, o, h, lo, c, v in expected
    }
    assert len(kis_requests(fake_kis, "inquire-daily-itemchartprice")) == 3

    out = backfill(*args)
    assert "0 inserted, 0 updated, 262 unchanged" in out
    assert MarketData.objects.filter(interval="1d").count() == 262


def test_a_corrected_day_is_updated(kis_settings, fake_kis, redis_client):
    day = dt.date(2024, 3, 4)
    fake_kis.state.set_daily_candles("000660", {day: (150000, 151000, 149000, 150500, 10)})
    backfill("--symbol", "000660", "--start", "2024-03-04", "--end", "2024-03-04")
    fake_kis.state.set_daily_candles("000660", {day: (150000, 152000, 149000, 151500, 12)})
    out = backfill("--symbol", "000660", "--start", "2024-03-04", "--end", "2024-03-04")
    assert "0 inserted, 1 updated, 0 unchanged" in out
    row = MarketData.objects.get(symbol="000660", interval="1d")
    assert (row.close, row.volume) == (Decimal(151500), 12)


def test_minute_history_resumes_after_an_interruption(kis_settings, fake_kis, redis_client):
    args = ("--interval", "1m", "--symbol", "005930", "--start", "2024-03-04")
    # 391 candles a day, 120 a call: the 2nd day's 2nd call is refused.
    fake_kis.state.fail_next(1, msg_cd="OPSQ0001", msg1="조회할 자료가 없습니다.", skip=5)
    with pytest.raises(CommandError) as failed:
        backfill(*args, "--end", "2024-03-06")
    assert "OPSQ0001" in str(failed.value) and "run the same command again" in str(failed.value)
    assert MarketData.objects.filter(interval="1m").count() == 391  # day 1 only, day 2 whole

    fake_kis.state.requests.clear()
    out = backfill(*args, "--end", "2024-03-06")
    assert "782 candles from KIS: 782 inserted" in out
    assert "1 days already stored (skipped)" in out
    assert {r["params"]["FID_INPUT_DATE_1"] for r in kis_requests(fake_kis, "dailychartprice")} == {
        "20240305",
        "20240306",
    }
    assert MarketData.objects.filter(interval="1m").count() == 3 * 391

    out = backfill(*args, "--end", "2024-03-06", "--refresh")
    assert "1173 candles from KIS: 0 inserted, 0 updated, 1173 unchanged" in out
    # Through the shared limiter: never over KIS's limit.
    assert fake_kis.state.max_per_window(1.0) <= 18
    assert fake_kis.state.rate_limited == 0


def test_holidays_are_not_asked_for(kis_settings, fake_kis, redis_client):
    # 2024-03-01 (Independence Movement Day) and the weekend: only Monday is fetched.
    out = backfill(
        "--interval", "1m", "--symbol", "005930", "--start", "2024-03-01", "--end", "2024-03-04"
    )
    assert "391 candles" in out
    assert {r["params"]["FID_INPUT_DATE_1"] for r in kis_requests(fake_kis, "dailychartprice")} == {
        "20240304"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--start", "2024-01-01"), "needs --symbol"),
        (("--symbol", "005930"), "needs --start"),
        (("--symbol", "005930", "--start", "2024-13-01"), "not a date"),
        (("--symbol", "005930", "--start", "2024-03-05", "--end", "2024-03-04"), "is after"),
        (("--symbol", "005930", "--start", "2024-01-01", "--interval", "5m"), "1d or 1m"),
        (("--symbol", "005930", "--start", "2099-01-01", "--end", "2099-01-02"), "future"),
        (("--symbol", "59", "--start", "2024-03-04", "--end", "2024-03-04"), "not a KRX code"),
        (("somefile.csv", "--symbol", "005930", "--start", "2024-01-01"), "takes no paths"),
    ],
)
def test_bad_options_are_named(kis_settings, fake_kis, redis_client, args, message):
    with pytest.raises(CommandError, match=message):
        backfill(*args)


def test_missing_credentials_name_the_variable(kis_settings, redis_client):
    kis_settings.KIS_APP_SECRET = ""
    with pytest.raises(CommandError, match="KIS_APP_SECRET is not set"):
        backfill("--symbol", "005930", "--start", "2024-03-04")
