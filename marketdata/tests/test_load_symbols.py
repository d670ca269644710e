"""manage.py load_symbols: stocks_metadata from CSV, idempotent, bad lines with numbers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from marketdata.models import Stock

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "sample_symbols.csv"
HEADER = "symbol,name,market,sector,market_cap,shares_outstanding\n"


def load(*args, fails: bool = False):
    out, err = io.StringIO(), io.StringIO()
    if fails:
        with pytest.raises(CommandError) as failure:
            call_command("load_symbols", *map(str, args), stdout=out, stderr=err)
        return str(failure.value), out.getvalue(), err.getvalue()
    call_command("load_symbols", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_sample_loads_and_reruns_report_unchanged_and_updated(tmp_path):
    out, _ = load(SAMPLE)
    assert "5 created, 0 updated, 0 unchanged" in out
    samsung = Stock.objects.get(pk="005930")
    assert (samsung.name, samsung.market, samsung.sector) == (
        "Samsung Electronics",
        "KOSPI",
        "Semiconductors",
    )
    assert samsung.shares_outstanding == 5969782550
    etf = Stock.objects.get(pk="069500")
    assert (etf.market, etf.sector, etf.market_cap) == ("ETF", "", None)

    out, _ = load(SAMPLE)
    assert "0 created, 0 updated, 5 unchanged" in out

    changed = tmp_path / "changed.csv"
    changed.write_text(
        SAMPLE.read_text().replace("Kakao,KOSPI,Internet", "Kakao Corp,KOSPI,Internet")
    )
    out, _ = load(changed)
    assert "0 created, 1 updated, 4 unchanged" in out
    assert Stock.objects.get(pk="035720").name == "Kakao Corp"


def test_bad_lines_are_reported_with_numbers_and_the_file_loads_nothing(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        HEADER
        + "005930,Samsung Electronics,KOSPI,Semiconductors,436000000000000,5969782550\n"  # 2
        + "000660,SK hynix,NYSE,Semiconductors,,\n"  # 3: market
        + "5930,Short,KOSPI,,,\n"  # 4: symbol
        + "035720,Kakao,KOSPI,Internet,lots,\n"  # 5: market_cap
        + "005930,Samsung again,KOSPI,,,\n"  # 6: repeated
        + "247540,Ecopro BM,KOSDAQ,Batteries\n"  # 7: 4 fields
        + "091990,Celltrion Healthcare,KOSDAQ,Pharma,-1,\n"  # 8: negative
    )

    message, out, err = load(path, fails=True)

    assert Stock.objects.count() == 0
    assert "1 of 1 files were not loaded" in message
    assert "NOT loaded: 6 bad lines" in out
    reported = err.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in reported] == [
        f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8)
    ]
    assert "market" in reported[0] and "NYSE" in reported[0]
    assert "symbol" in reported[1]
    assert "market_cap 'lots' is not a whole number" in reported[2]
    assert "already on line 2" in reported[3]
    assert "4 fields, expected 6" in reported[4]
    assert "market_cap" in reported[5]

    out, err = load(path, "--skip-bad")
    assert "1 created, 0 updated, 0 unchanged, 6 bad lines skipped" in out
    assert list(Stock.objects.values_list("symbol", flat=True)) == ["005930"]


def test_optional_columns_may_be_left_out_but_required_ones_not(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("symbol,name,market\n005930,Samsung Electronics,kospi\n")
    out, _ = load(path)
    assert "1 created" in out
    assert Stock.objects.get(pk="005930").market == "KOSPI"

    path.write_text("symbol,name\n005930,Samsung Electronics\n")
    _, _, err = load(path, fails=True)
    assert "bad header (missing column(s) market)" in err
