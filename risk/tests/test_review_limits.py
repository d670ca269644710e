"""Review of limits_update's input: JSON numbers arrive as floats (0.05 is a ratio of 0.05, not
a 13-place binary approximation refused for its places), and a fraction where a whole number
is wanted (or a bool) is refused, never truncated."""

from decimal import Decimal

import pytest

from risk import services
from risk.models import LimitChange, RiskLimits

pytestmark = pytest.mark.django_db

LIMITS = "/api/v1/risk/limits/"


def test_json_numbers_patch_the_limits_exactly(personas, api_client_for):
    body = {"stop_loss_ratio": 0.05, "daily_loss_limit": 30000.5, "max_trades_per_day": 30}
    answer = api_client_for(personas["operator"]).patch(LIMITS, body, format="json")
    assert answer.status_code == 200, answer.content
    limits = RiskLimits.objects.get()
    assert limits.stop_loss_ratio == Decimal("0.05")
    assert limits.daily_loss_limit == Decimal("30000.5")
    assert limits.max_trades_per_day == 30
    assert dict(LimitChange.objects.values_list("field", "new_value")) == {
        "stop_loss_ratio": "0.05",
        "daily_loss_limit": "30000.5",
        "max_trades_per_day": "30",
    }


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"max_consecutive_losses": 2.9}, "max_consecutive_losses: 2.9 is not a whole number"),
        ({"max_trades_per_day": "7.5"}, "max_trades_per_day: '7.5' is not"),
        ({"max_orders_per_second": True}, "max_orders_per_second: True is not a number"),
        ({"stop_loss_ratio": 0.0312345}, "stop_loss_ratio"),
    ],
)
def test_fractions_where_whole_numbers_are_wanted_are_refused(changes, says):
    before = RiskLimits.objects.get_or_create(pk=1)[0]
    with pytest.raises(services.RiskError) as caught:
        services.limits_update(actor="test", **changes)
    assert says in str(caught.value.message)
    after = RiskLimits.objects.get()
    for name in changes:
        assert getattr(after, name) == getattr(before, name)
    assert not LimitChange.objects.exists()
