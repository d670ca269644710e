"""Test and bench helpers of the risk app (imported by tests and bench/, never by the app)."""

from __future__ import annotations

from decimal import Decimal

from . import services

# Limits wide enough that no risk rule denies anything: for tests of the trading core that are
# not about the risk rules (the rules have their own tests, at their limits).
PERMISSIVE: dict = {
    "max_position_ratio": Decimal(1),
    "max_sector_ratio": Decimal(1),
    "max_exposure_ratio": Decimal(1),
    "min_cash_reserve_ratio": Decimal(0),
    "min_order_value": Decimal(0),
    "max_order_value": Decimal(10) ** 15,
    "daily_loss_limit": Decimal(10) ** 15,
    "monthly_loss_limit": Decimal(10) ** 15,
    "max_consecutive_losses": 1_000_000,
    "max_trades_per_day": 1_000_000,
    "same_symbol_interval_seconds": 0,
    "max_orders_per_second": 1_000_000,
}


def limits_permissive() -> None:
    """Open every risk limit wide (recorded as a change by "test")."""
    services.limits_update(actor="test", reason="permissive limits for a test", **PERMISSIVE)


def limits_default() -> None:
    """Put every limit back to its default (the model's field defaults)."""
    from .models import RiskLimits

    defaults = {name: RiskLimits._meta.get_field(name).default for name in services.LIMIT_FIELDS}
    services.limits_update(actor="test", reason="default limits for a test", **defaults)
