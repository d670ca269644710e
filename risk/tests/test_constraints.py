"""PostgreSQL itself rejects bad risk_metrics rows (full_clean bypassed)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from risk.models import RiskMetric

pytestmark = pytest.mark.django_db


def metric_fields(**overrides):
    fields = {
        "timestamp": datetime(2026, 3, 3, 6, 30, tzinfo=UTC),
        "portfolio_value": Decimal("100000000"),
        "daily_pnl": Decimal("-1250000.5"),
        "var_95": Decimal("2100000"),
        "max_drawdown": Decimal("0.035"),
        "sharpe_ratio": Decimal("-0.4"),
        "beta": Decimal("1.05"),
    }
    return {**fields, **overrides}


CASES = [
    ("risk_metrics_portfolio_value_gte_0", {"portfolio_value": Decimal("-1")}),
    ("risk_metrics_var_gte_0", {"var_95": Decimal("-1")}),
    ("risk_metrics_max_drawdown_0_1", {"max_drawdown": Decimal("1.01")}),
    ("risk_metrics_max_drawdown_0_1", {"max_drawdown": Decimal("-0.01")}),
]


def test_good_rows_are_accepted():
    RiskMetric.objects.create(**metric_fields())
    RiskMetric.objects.create(
        **metric_fields(
            portfolio_value=0, var_95=None, max_drawdown=1, sharpe_ratio=None, beta=None
        )
    )
    assert RiskMetric.objects.count() == 2


@pytest.mark.parametrize(("constraint", "overrides"), CASES)
def test_risk_metric_check_constraints(constraint, overrides):
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        RiskMetric.objects.create(**metric_fields(**overrides))
    assert info.value.__cause__.diag.constraint_name == constraint


def test_every_declared_constraint_is_tested_and_in_the_database():
    declared = {c.name for c in RiskMetric._meta.constraints}
    assert declared <= {name for name, _ in CASES}
    with connection.cursor() as cursor:
        in_db = connection.introspection.get_constraints(cursor, RiskMetric._meta.db_table)
    assert declared <= set(in_db)
