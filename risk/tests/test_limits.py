"""Risk limits: one row at the plan's defaults, edits validated and audited, the cache."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from risk import services
from risk.models import LimitChange, RiskLimits

D = Decimal
pytestmark = pytest.mark.django_db


def test_the_migration_made_the_one_row_at_its_defaults():
    limits = services.limits_get()
    assert limits.pk == 1
    assert limits.max_position_ratio == D("0.2") and limits.daily_loss_limit == 50_000
    assert limits.benchmark_symbol == "069500"
    assert limits.stoploss_cooldown_seconds == 1800 and limits.alert_dedup_seconds == 300


def test_a_second_row_is_refused_by_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        RiskLimits.objects.create(id=2)


def test_an_update_writes_one_audit_row_per_changed_field(operator):
    changes = services.limits_update(
        user=operator,
        reason="tighter for the open",
        max_position_ratio="0.15",
        daily_loss_limit=D(40_000),
        max_trades_per_day=20,  # unchanged: no row
    )
    assert [(c.field, c.old_value, c.new_value) for c in changes] == [
        ("max_position_ratio", "0.200000", "0.15"),
        ("daily_loss_limit", "50000.0000", "40000"),
    ]
    rows = list(LimitChange.objects.order_by("id"))
    assert [r.field for r in rows] == ["max_position_ratio", "daily_loss_limit"]
    assert all(r.changed_by == operator and r.actor == "user:olivia-operator" for r in rows)
    assert all(r.reason == "tighter for the open" and r.changed_at for r in rows)
    assert services.limits_get().max_position_ratio == D("0.15")


def test_no_change_no_audit(operator):
    assert services.limits_update(user=operator, max_trades_per_day=20) == []
    assert not LimitChange.objects.exists()


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"max_position_ratio": "0"}, "max_position_ratio"),
        ({"max_position_ratio": "1.01"}, "max_position_ratio"),
        ({"min_cash_reserve_ratio": "1"}, "min_cash_reserve_ratio"),
        ({"max_order_value": "5000"}, "max_order_value"),  # below the minimum 10,000
        ({"daily_loss_limit": "0"}, "daily_loss_limit"),
        ({"max_orders_per_second": 0}, "max_orders_per_second"),
        ({"max_trades_per_day": -1}, "max_trades_per_day"),
        ({"stop_loss_ratio": "abc"}, "stop_loss_ratio"),
        ({"benchmark_symbol": "69500"}, "benchmark_symbol"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_values_are_refused_naming_the_limit(operator, changes, says):
    with pytest.raises(services.RiskError) as caught:
        services.limits_update(user=operator, **changes)
    assert says in caught.value.message
    assert not LimitChange.objects.exists()
    assert services.limits_get().max_position_ratio == D("0.2")


def test_the_database_checks_the_ranges_too():
    with pytest.raises(IntegrityError), transaction.atomic():
        RiskLimits.objects.filter(pk=1).update(max_sector_ratio=D("1.5"))
    with pytest.raises(IntegrityError), transaction.atomic():
        RiskLimits.objects.filter(pk=1).update(min_order_value=D(2_000_000))


def test_limits_for_reloads_only_when_the_row_changed(operator):
    services.limits_reset_cache()
    first = services.limits_get()
    assert services.limits_for(first.updated_at) is first
    services.limits_update(user=operator, max_orders_per_second=7)
    fresh = RiskLimits.objects.get(pk=1)
    assert services.limits_for(fresh.updated_at).max_orders_per_second == 7


def test_another_process_sees_a_change_within_the_cache_time(operator, monkeypatch):
    services.limits_reset_cache()
    services.limits_get()
    # another process's write: the row changes, this process's copy is not told
    RiskLimits.objects.filter(pk=1).update(max_trades_per_day=3)
    assert services.limits_get().max_trades_per_day == 20  # cached
    monkeypatch.setattr(services, "LIMITS_CACHE_SECONDS", 0)
    assert services.limits_get().max_trades_per_day == 3


def test_an_uncommitted_change_is_not_cached(operator):
    services.limits_reset_cache()
    services.limits_get()
    services.limits_update(user=operator, max_trades_per_day=4)
    assert services.limits_get().max_trades_per_day == 4
    assert services._cached is None  # read, not shared, until the commit
