"""manage.py backfill: the CSV format, idempotent re-runs, bad lines, atomic files."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from marketdata.models import MarketData

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample_candles.csv"
HEADER = "symbol,interval,time,open,high,low,close,volume\n"
KST = dt.timezone(dt.timedelta(hours=9))


def backfill(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("backfill", *map(str, args), "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def backfill_fails(*args) -> tuple[str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("backfill", *map(str, args), "--no-progress", stdout=out, stderr=err)
    return str(failure.value), out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows() -> dict:
    return {
        (r.symbol, r.interval, r.time): (r.open, r.high, r.low, r.close, r.volume)
        for r in MarketData.objects.all()
    }


def test_the_sample_loads_and_a_rerun_changes_nothing():
    out, _ = backfill(SAMPLE)
    assert "7 inserted, 0 updated, 0 unchanged" in out
    stored = rows()
    assert len(stored) == 7
    first = stored[("005930", "1m", dt.datetime(2024, 3, 4, 0, 0, tzinfo=dt.UTC))]
    assert first == (Decimal(73000), Decimal(73200), Decimal(72900), Decimal(73100), 15234)
    assert ("000660", "1d", dt.datetime(2024, 3, 3, 15, 0, tzinfo=dt.UTC)) in stored

    out, _ = backfill(SAMPLE)  # resumable = idempotent: run it again

    assert "0 inserted, 0 updated, 7 unchanged" in out
    assert rows() == stored


def test_a_rerun_with_corrected_values_updates_those_rows(tmp_path):
    backfill(SAMPLE)
    corrected = SAMPLE.read_text().replace(
        "73100,73300,73000,73200,9876", "73100,73400,73000,73300,9900"
    )
    out, _ = backfill(write(tmp_path, "corrected.csv", corrected))

    assert "0 inserted, 1 updated, 6 unchanged" in out
    row = MarketData.objects.get(
        symbol="005930", interval="1m", time=dt.datetime(2024, 3, 4, 9, 1, tzinfo=KST)
    )
    assert (row.high, row.close, row.volume) == (Decimal(73400), Decimal(73300), 9900)


def test_a_file_with_bad_lines_loads_nothing_and_reports_every_one(tmp_path):
    path = write(
        tmp_path,
        "bad.csv",
        HEADER
        + "005930,1m,2024-03-04T09:00:00+09:00,73000,73200,72900,73100,100\n"  # line 2, good
        + "005930,1m,2024-03-04T09:01:00+09:00,73000,72000,72900,73100,100\n"  # 3: high < low
        + "005930,1m,2024-03-04T09:02:00,73000,73200,72900,73100,100\n"  # 4: naive time
        + "005930,1m,2024-03-04T09:03:00+09:00,73000,73200,72900,73100\n"  # 5: 7 fields
        + "\n"  # 6: blank, ignored
        + "5930,1m,2024-03-04T09:04:00+09:00,73000,73200,72900,73100,100\n"  # 7: symbol
        + "005930,2m,2024-03-04T09:05:00+09:00,73000,73200,72900,73100,100\n"  # 8: interval
        + "005930,1m,2024-03-04T09:06:00+09:00,abc,73200,72900,73100,100\n"  # 9: not a number
        + "005930,1m,2024-03-04T09:07:00+09:00,73000,73200,72900,73100,-5\n"  # 10: volume
        + "005930,1m,2024-03-04T09:08:00+09:00,73000,73200,72900,73100,1.5\n",  # 11: volume
    )

    message, out, err = backfill_fails(path)

    assert MarketData.objects.count() == 0
    assert "1 of 1 files were not loaded" in message
    assert f"{path}: NOT loaded: 8 bad lines" in out
    reported = err.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in reported] == [
        f"{path}:{n}" for n in (3, 4, 5, 7, 8, 9, 10, 11)
    ]
    assert "high 72000 < low 72900" in reported[0]
    assert "has no UTC offset" in reported[1]
    assert "7 fields, expected 8" in reported[2]
    assert "symbol '5930' is not a KRX code" in reported[3]
    assert "interval '2m' is not one of" in reported[4]
    assert "open 'abc' is not a number" in reported[5]
    assert "volume -5 is not a whole number >= 0" in reported[6]
    assert "volume '1.5' is not a whole number" in reported[7]


def test_skip_bad_loads_the_good_lines_and_reports_the_bad(tmp_path):
    path = write(
        tmp_path,
        "mixed.csv",
        HEADER
        + "005930,1m,2024-03-04T09:00:00+09:00,73000,73200,72900,73100,100\n"
        + "005930,1m,2024-03-04T09:01:00+09:00,0,73200,72900,73100,100\n"
        + "005930,1m,2024-03-04T09:02:00+09:00,73000,73200,72900,73100,100\n",
    )

    out, err = backfill(path, "--skip-bad")

    assert "2 inserted" in out and "1 bad lines skipped" in out
    assert err.strip() == f"{path}:3: open 0 is not > 0"
    assert MarketData.objects.count() == 2


def test_one_bad_file_does_not_stop_the_others_and_the_run_fails(tmp_path):
    write(tmp_path, "a_good.csv", SAMPLE.read_text())
    write(tmp_path, "b_bad.csv", HEADER + "005930,1m,yesterday,1,1,1,1,1\n")

    message, out, err = backfill_fails(tmp_path)  # a directory: every *.csv in it

    assert "1 of 2 files were not loaded" in message
    assert "a_good.csv: 7 lines: 7 inserted" in out
    assert "b_bad.csv:2: time 'yesterday' is not ISO 8601" in err
    assert MarketData.objects.count() == 7


def test_files_without_an_interval_column_take_the_default(tmp_path):
    text = (
        "time,symbol,open,high,low,close,volume\n"
        "2024-03-04T00:00:00Z,005930,73000,73200,72900,73100,100\n"
    )
    path = write(tmp_path, "no_interval.csv", text)

    _, _, err = backfill_fails(path)
    assert "bad header (missing column(s) interval)" in err

    backfill(path, "--interval", "5m")
    [row] = MarketData.objects.all()
    assert (row.interval, row.time) == ("5m", dt.datetime(2024, 3, 4, tzinfo=dt.UTC))


def test_batches_over_stored_rows_and_a_repeated_key_in_one_file(tmp_path):
    backfill(SAMPLE)
    path = write(
        tmp_path,
        "overlap.csv",
        HEADER
        + "005930,1m,2024-03-04T09:00:00+09:00,73000,73200,72900,73100,15234\n"  # same
        + "005930,1m,2024-03-04T09:03:00+09:00,72900,73000,72800,72800,5000\n"  # new
        + "005930,1m,2024-03-04T09:04:00+09:00,72800,72900,72700,72700,100\n"  # new
        + "005930,1m,2024-03-04T09:04:00+09:00,72800,72900,72700,72750,200\n",  # later wins
    )

    # Batches of 3: the repeated key's later line is in the second batch (an update).
    out, _ = backfill(path, "--batch-size", "3")

    assert "2 inserted, 1 updated, 1 unchanged, 0 repeated keys" in out
    assert MarketData.objects.count() == 9
    row = MarketData.objects.get(
        symbol="005930", interval="1m", time=dt.datetime(2024, 3, 4, 9, 4, tzinfo=KST)
    )
    assert (row.close, row.volume) == (Decimal(72750), 200)


def test_bad_headers_missing_files_and_the_kis_source_are_clear_errors(tmp_path):
    path = write(tmp_path, "header.csv", "symbol,interval,when,open,high,low,close,volume\n")
    _, _, err = backfill_fails(path)
    assert f"{path}:1: bad header (missing column(s) time; unknown column(s) when)" in err

    message, _, _ = backfill_fails(tmp_path / "nope.csv")
    assert "nope.csv: no such file or directory" in message

    message, _, _ = backfill_fails(SAMPLE, "--source", "kis")
    assert "--source kis takes no paths" in message
    assert MarketData.objects.count() == 0


def test_unusual_but_valid_lines_load_like_usual_ones(tmp_path):
    # Quoted cells, spaces, decimal prices, 'Z', fractional seconds, CRLF: not the fast
    # path's plain shape, but valid, so they load with the same meaning.
    path = write(
        tmp_path,
        "unusual.csv",
        HEADER
        + '"005930","1m","2024-03-04T09:00:00+09:00","73000","73200","72900","73100","100"\r\n'
        + "005930,1m, 2024-03-04T00:01:00Z ,73000,73200,72900,73100,100\r\n"
        + "069500,1m,2024-03-04T00:02:00.000+00:00,35120.55,35130,35100.5,35125,7\r\n",
    )

    out, err = backfill(path)

    assert "3 inserted" in out and err == ""
    assert rows() == {
        ("005930", "1m", dt.datetime(2024, 3, 4, 0, 0, tzinfo=dt.UTC)): (
            Decimal(73000),
            Decimal(73200),
            Decimal(72900),
            Decimal(73100),
            100,
        ),
        ("005930", "1m", dt.datetime(2024, 3, 4, 0, 1, tzinfo=dt.UTC)): (
            Decimal(73000),
            Decimal(73200),
            Decimal(72900),
            Decimal(73100),
            100,
        ),
        ("069500", "1m", dt.datetime(2024, 3, 4, 0, 2, tzinfo=dt.UTC)): (
            Decimal("35120.55"),
            Decimal(35130),
            Decimal("35100.50"),
            Decimal(35125),
            7,
        ),
    }


def test_a_time_in_the_future_or_a_price_too_large_is_a_bad_line(tmp_path):
    path = write(
        tmp_path,
        "odd.csv",
        HEADER
        + "005930,1m,2999-01-01T09:00:00+09:00,73000,73200,72900,73100,100\n"
        + "005930,1m,2024-03-04T09:00:00+09:00,1,9999999999999,1,1,100\n"
        + "005930,1m,2024-03-04T09:01:00+09:00,73000.001,73200,72900,73100,100\n",
    )

    _, _, err = backfill_fails(path)

    reported = err.strip().splitlines()
    assert "is in the future" in reported[0]
    assert "high 9999999999999 does not fit numeric(14, 2)" in reported[1]
    assert "open 73000.001 does not fit numeric(14, 2)" in reported[2]
