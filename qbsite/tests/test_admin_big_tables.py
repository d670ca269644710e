"""The big tables' changelists (market_data, system_logs, trades) never count the table.

Queries are captured on the real PostgreSQL: with no filter the page uses the planner's
estimate (no COUNT at all once the table's statistics say it is big); with a filter or a
search it counts at most EXACT_COUNT_CAP rows (COUNT over a LIMITed subquery).
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from marketdata.models import MarketData, MarketDataRow, Stock
from ops.models import SystemLog
from qbsite.admin_utils import EXACT_COUNT_CAP, BigTableAdminMixin, EstimatedCountPaginator
from trading.models import Trade

BIG = {
    MarketDataRow: {
        "time": "time",
        "search": "005930",
        "filters": {"interval__exact": "1m"},
        # Rows enough for the statistics to say "big": one per minute back from now.
        "fill": "INSERT INTO market_data (time, symbol, interval, open, high, low, close, volume)"
        " SELECT now() - g * interval '1 minute', '000660', '1m', 100, 100, 100, 100, 1"
        " FROM generate_series(1, %s) g",
    },
    SystemLog: {
        "time": "timestamp",
        "search": "qb.collector",
        "filters": {"level__exact": "ERROR"},
        "fill": "INSERT INTO system_logs (timestamp, level, component, message, metadata)"
        " SELECT now() - g * interval '1 second', 'INFO', 'qb.bench', 'row ' || g, '{}'"
        " FROM generate_series(1, %s) g",
    },
    Trade: {
        "time": "timestamp",
        "search": "0059",
        "filters": {"side__exact": "BUY", "status__exact": "PENDING"},
        "fill": "INSERT INTO trades (timestamp, symbol, side, quantity, price, commission, tax,"
        " strategy, order_type, status, execution_id)"
        " SELECT now() - g * interval '1 second', '000660', 'BUY', 1, 100, 0, 0, '', 'LIMIT',"
        " 'PENDING', '' FROM generate_series(1, %s) g",
    },
}

# The user and the page's rows (the session comes from the Redis cache): what every big
# changelist costs beside counting.
BASE_QUERIES = 2


def _label(model) -> str:
    return model._meta.label


def _changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _counts_on(queries, table: str) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if re.search(r"\bCOUNT\(", q["sql"], re.I) and f'"{table}"' in q["sql"]
    ]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def rows(db):
    now = timezone.now().replace(second=0, microsecond=0)
    stocks = [
        Stock.objects.create(symbol="005930", name="Samsung Electronics", market="KOSPI"),
        Stock.objects.create(symbol="000660", name="SK hynix", market="KOSPI"),
    ]
    for stock in stocks:
        MarketData.objects.create(
            symbol=stock.symbol,
            interval="1m",
            time=now,
            open=Decimal(100),
            high=Decimal(101),
            low=Decimal(99),
            close=Decimal(100),
            volume=5,
        )
        Trade.objects.create(
            timestamp=now,
            symbol=stock,
            side="BUY",
            quantity=1,
            price=Decimal(100),
            order_type="MARKET",
        )
    SystemLog.objects.create(timestamp=now, level="ERROR", component="qb.collector", message="x")
    SystemLog.objects.create(timestamp=now, level="INFO", component="qb.archiver", message="y")


@pytest.fixture
def big_statistics(rows):
    """fill(model): the table gets EXACT_COUNT_CAP more rows and fresh statistics.

    ANALYZE writes pg_class outside the test's transaction, so the rows are deleted and the
    table analyzed again afterwards: later tests see the statistics of the rows they made.
    """
    filled = []

    def fill(model):
        table = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(BIG[model]["fill"], [EXACT_COUNT_CAP + 50])
            cursor.execute(f"ANALYZE {table}")
        filled.append(model)

    yield fill
    with connection.cursor() as cursor:
        for model in filled:
            cursor.execute(f"DELETE FROM {model._meta.db_table}")
            cursor.execute(f"ANALYZE {model._meta.db_table}")


@pytest.mark.parametrize("model", BIG, ids=_label)
def test_big_table_admins_follow_the_style(model):
    model_admin = admin.site._registry[model]
    assert isinstance(model_admin, BigTableAdminMixin)
    assert model_admin.paginator is EstimatedCountPaginator
    assert model_admin.show_full_result_count is False
    assert model_admin.show_facets is admin.ShowFacets.NEVER
    assert model_admin.date_hierarchy is None


@pytest.mark.parametrize("model", BIG, ids=_label)
def test_unfiltered_changelist_of_a_big_table_uses_the_estimate(
    client, operator, big_statistics, model
):
    big_statistics(model)
    client.force_login(operator)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(_changelist(model))
    assert response.status_code == 200
    table = model._meta.db_table
    assert _counts_on(captured.captured_queries, table) == []
    cl = response.context["cl"]
    assert cl.result_count >= EXACT_COUNT_CAP
    assert cl.full_result_count is None
    assert len(cl.result_list) == cl.list_per_page
    # The estimate: one pg_class look-up (market_data first asks whether it is a hypertable).
    estimate_queries = 2 if model is MarketDataRow else 1
    assert len(captured.captured_queries) == BASE_QUERIES + estimate_queries, [
        q["sql"] for q in captured.captured_queries
    ]


@pytest.mark.parametrize("model", BIG, ids=_label)
def test_filtered_changelist_counts_at_most_the_cap(client, operator, big_statistics, model):
    big_statistics(model)
    client.force_login(operator)
    spec = BIG[model]
    for params in (
        {"q": spec["search"]},
        spec["filters"],
        {f"{spec['time']}__recent": "today"},
        {f"{spec['time']}__recent": "1h", "q": spec["search"]},
    ):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(_changelist(model), params)
        assert response.status_code == 200, params
        counts = _counts_on(captured.captured_queries, model._meta.db_table)
        assert len(counts) == 1, params
        assert f"LIMIT {EXACT_COUNT_CAP}" in counts[0], counts[0]
        assert len(captured.captured_queries) == BASE_QUERIES + 1, params


@pytest.mark.parametrize("model", BIG, ids=_label)
def test_small_or_unanalyzed_table_is_counted_exactly_but_bounded(client, operator, rows, model):
    """An estimate below the cap may be a never-analyzed table (estimate 0): count, bounded."""
    client.force_login(operator)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(_changelist(model))
    assert response.status_code == 200
    counts = _counts_on(captured.captured_queries, model._meta.db_table)
    assert len(counts) == 1
    assert f"LIMIT {EXACT_COUNT_CAP}" in counts[0]
    assert response.context["cl"].result_count == model.objects.count()


def test_filtered_count_stops_at_the_cap(client, operator, big_statistics):
    big_statistics(SystemLog)
    client.force_login(operator)
    response = client.get(_changelist(SystemLog), {"q": "qb.bench"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == EXACT_COUNT_CAP
