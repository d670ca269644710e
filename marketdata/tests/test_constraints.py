"""PostgreSQL itself rejects bad stocks_metadata and market_data rows (full_clean bypassed)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from marketdata.models import MarketData, Stock

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)


def assert_rejected_by(constraints: set[str], create) -> None:
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        create()
    assert info.value.__cause__.diag.constraint_name in constraints


def stock_fields(**overrides):
    fields = {
        "symbol": "005930",
        "name": "Samsung Electronics",
        "sector": "Semiconductors",
        "market": "KOSPI",
        "market_cap": 400_000_000_000_000,
        "shares_outstanding": 5_969_782_550,
    }
    return {**fields, **overrides}


def candle_fields(**overrides):
    fields = {
        "time": T0,
        "symbol": "005930",
        "interval": "1m",
        "open": Decimal("70000"),
        "high": Decimal("70500"),
        "low": Decimal("69800"),
        "close": Decimal("70100"),
        "volume": 1200,
    }
    return {**fields, **overrides}


STOCK_CASES = [
    ("stocks_metadata_symbol_format", {"symbol": "00593a"}),
    ("stocks_metadata_symbol_format", {"symbol": "5930"}),
    ("stocks_metadata_market_valid", {"market": "NYSE"}),
    ("stocks_metadata_market_cap_gte_0", {"market_cap": -1}),
    ("stocks_metadata_shares_gte_0", {"shares_outstanding": -1}),
]

ZERO = Decimal("0")
CANDLE_CASES = [
    ("market_data_high_gte_low", {"high": Decimal("69000"), "low": Decimal("69800")}),
    ("market_data_prices_gt_0", {"open": ZERO, "high": ZERO, "low": ZERO, "close": ZERO}),
    ("market_data_ohlc_within_range", {"close": Decimal("71000")}),
    ("market_data_ohlc_within_range", {"open": Decimal("69000")}),
    ("market_data_volume_gte_0", {"volume": -1}),
    ("market_data_symbol_format", {"symbol": "ABC"}),
    ("market_data_interval_valid", {"interval": "2m"}),
]


def test_good_rows_are_accepted():
    Stock.objects.create(**stock_fields())
    Stock.objects.create(**stock_fields(symbol="0001A0", market="KOSDAQ", market_cap=None))
    MarketData.objects.create(**candle_fields())
    # The same minute on another interval, and a flat candle with no volume.
    MarketData.objects.create(**candle_fields(interval="5m"))
    flat = Decimal("70000")
    MarketData.objects.create(
        **candle_fields(time=T0.replace(minute=1), open=flat, high=flat, low=flat, close=flat)
    )
    assert Stock.objects.count() == 2
    assert MarketData.objects.count() == 3


@pytest.mark.parametrize(("constraint", "overrides"), STOCK_CASES)
def test_stock_check_constraints(constraint, overrides):
    assert_rejected_by({constraint}, lambda: Stock.objects.create(**stock_fields(**overrides)))


def test_stock_symbol_is_unique():
    Stock.objects.create(**stock_fields())
    assert_rejected_by(
        {"stocks_metadata_pkey"},
        lambda: Stock.objects.create(**stock_fields(name="Another name")),
    )


@pytest.mark.parametrize(("constraint", "overrides"), CANDLE_CASES)
def test_market_data_check_constraints(constraint, overrides):
    assert_rejected_by(
        {constraint}, lambda: MarketData.objects.create(**candle_fields(**overrides))
    )


def test_market_data_key_is_symbol_interval_time():
    MarketData.objects.create(**candle_fields())
    assert_rejected_by(
        {"market_data_pkey"},
        lambda: MarketData.objects.create(**candle_fields(close=Decimal("70200"))),
    )


def test_every_declared_constraint_is_tested_and_in_the_database():
    tested = {name for name, _ in STOCK_CASES + CANDLE_CASES}
    with connection.cursor() as cursor:
        for model in (Stock, MarketData):
            declared = {c.name for c in model._meta.constraints}
            assert declared <= tested, f"untested: {declared - tested}"
            in_db = connection.introspection.get_constraints(cursor, model._meta.db_table)
            assert declared <= set(in_db)
