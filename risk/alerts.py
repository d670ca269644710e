"""Risk alerts: which limits a look at the portfolio breaches, and raising an alert once.

`limit_breaches(figures, limits)` is pure: each breached limit as a `Breach` (alert type, what
it is about, the current value and the limit, severity, and the trading state it calls for).
Thresholds: a ratio breaches when it is ABOVE its maximum (at the maximum is allowed: it is
"the largest value"), the cash reserve when it is BELOW its minimum; a loss limit is breached
when the loss REACHES it (a 50,000 KRW limit stops at a 50,000 KRW loss); the consecutive
losses when the streak reaches the maximum.

The losses are realized losses (sells' profit_loss, net of costs) of the Seoul trading day and
month, the way RiskLimits defines daily_loss_limit and monthly_loss_limit.

`alert_raise(...)` raises one alert unless the same one was raised within
limits.alert_dedup_seconds: a Redis SET NX EX on `dedup_key(alert_type, subject)` decides
(one round trip, shared by every risk engine process); the winner writes the RiskAlert row and
publishes `risk_alert` through risk.services.alert_record, which checks the same key against
the table again (a Redis that lost its keys does not double an alert), and logs it at WARNING
or CRITICAL on qb.risk.alerts (so it reaches system_logs). If the write fails the Redis key is
deleted, so the next look raises it.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from risk import services
from risk.metrics import UNCLASSIFIED, Figures, ratio_decimal, share
from risk.models import RiskAlert, Severity, State

logger = logging.getLogger("qb.risk.alerts")

_ZERO = Decimal(0)
_KEY_PREFIX = "risk:alert:"


class AlertType(enum.StrEnum):
    POSITION_RATIO = "POSITION_RATIO"
    SECTOR_RATIO = "SECTOR_RATIO"
    EXPOSURE_RATIO = "EXPOSURE_RATIO"
    CASH_RESERVE = "CASH_RESERVE"
    DAILY_LOSS = "DAILY_LOSS"
    MONTHLY_LOSS = "MONTHLY_LOSS"
    CONSECUTIVE_LOSSES = "CONSECUTIVE_LOSSES"
    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"
    TRAILING_STOP = "TRAILING_STOP"
    STOPLOSS_GUARD = "STOPLOSS_GUARD"


@dataclass(frozen=True)
class Breach:
    alert_type: str
    severity: str
    current: Decimal
    limit: Decimal
    message: str
    symbol: str | None = None  # the stock it is about (the alert's symbol)
    subject: str = ""  # what the de-duplication tells apart: a symbol, a sector, or ""
    state: str | None = None  # the trading state the breach calls for
    details: Mapping = field(default_factory=dict)


def _ratio(part: Decimal, whole: Decimal) -> Decimal | None:
    value = share(part, whole)
    return None if value is None else ratio_decimal(value)


def _plain(value):
    """details as JSON can hold them: Decimals as exact strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def _pct(value: Decimal) -> str:
    return f"{value * 100:.2f} %"


def limit_breaches(figures: Figures, limits) -> list[Breach]:
    """Every limit `figures` breaches (module doc for the thresholds), in a stable order."""
    breaches: list[Breach] = []
    total = figures.portfolio_value
    for symbol, value in sorted(figures.values.items()):
        ratio = _ratio(value, total)
        if ratio is not None and ratio > limits.max_position_ratio:
            breaches.append(
                Breach(
                    AlertType.POSITION_RATIO,
                    Severity.WARNING,
                    ratio,
                    limits.max_position_ratio,
                    f"{symbol} is {_pct(ratio)} of the portfolio ({value:,.0f} of {total:,.0f}"
                    f" KRW), above the {_pct(limits.max_position_ratio)} limit.",
                    symbol=symbol,
                    subject=symbol,
                    details={"value": value, "portfolio_value": total},
                )
            )
    for sector, value in sorted(figures.sectors.items()):
        if sector == UNCLASSIFIED:
            continue  # as the pre-trade check: a stock with no sector has no sector limit
        ratio = _ratio(value, total)
        if ratio is not None and ratio > limits.max_sector_ratio:
            breaches.append(
                Breach(
                    AlertType.SECTOR_RATIO,
                    Severity.WARNING,
                    ratio,
                    limits.max_sector_ratio,
                    f"Sector {sector} is {_pct(ratio)} of the portfolio ({value:,.0f} KRW), "
                    f"above the {_pct(limits.max_sector_ratio)} limit.",
                    subject=sector,
                    details={"sector": sector, "value": value, "portfolio_value": total},
                )
            )
    ratio = _ratio(figures.exposure, total)
    if ratio is not None and ratio > limits.max_exposure_ratio:
        breaches.append(
            Breach(
                AlertType.EXPOSURE_RATIO,
                Severity.WARNING,
                ratio,
                limits.max_exposure_ratio,
                f"Positions are {_pct(ratio)} of the portfolio ({figures.exposure:,.0f} KRW), "
                f"above the {_pct(limits.max_exposure_ratio)} limit.",
                details={"exposure": figures.exposure, "portfolio_value": total},
            )
        )
    ratio = _ratio(figures.cash, total)
    if ratio is not None and ratio < limits.min_cash_reserve_ratio:
        breaches.append(
            Breach(
                AlertType.CASH_RESERVE,
                Severity.WARNING,
                ratio,
                limits.min_cash_reserve_ratio,
                f"Cash is {_pct(ratio)} of the portfolio ({figures.cash:,.0f} KRW), below the "
                f"{_pct(limits.min_cash_reserve_ratio)} reserve.",
                details={"cash": figures.cash, "portfolio_value": total},
            )
        )
    loss = max(-figures.realized_today, _ZERO)
    if loss >= limits.daily_loss_limit:
        breaches.append(
            Breach(
                AlertType.DAILY_LOSS,
                Severity.CRITICAL,
                loss,
                limits.daily_loss_limit,
                f"Realized loss today {loss:,.0f} KRW reached the daily limit "
                f"{limits.daily_loss_limit:,.0f} KRW.",
                state=State.HALTED,
            )
        )
    loss = max(-figures.realized_month, _ZERO)
    if loss >= limits.monthly_loss_limit:
        breaches.append(
            Breach(
                AlertType.MONTHLY_LOSS,
                Severity.CRITICAL,
                loss,
                limits.monthly_loss_limit,
                f"Realized loss this month {loss:,.0f} KRW reached the monthly limit "
                f"{limits.monthly_loss_limit:,.0f} KRW.",
                state=State.REDUCING,
            )
        )
    if figures.consecutive_losses >= limits.max_consecutive_losses:
        breaches.append(
            Breach(
                AlertType.CONSECUTIVE_LOSSES,
                Severity.CRITICAL,
                Decimal(figures.consecutive_losses),
                Decimal(limits.max_consecutive_losses),
                f"{figures.consecutive_losses} losing sells in a row (limit "
                f"{limits.max_consecutive_losses}).",
                state=State.REDUCING,
                details={"last_loss_trade": figures.last_loss_trade},
            )
        )
    return breaches


# --- raising ----------------------------------------------------------------------------------


def dedup_key(alert_type: str, subject: str = "") -> str:
    """The Redis key (and RiskAlert.dedup_key) of one alert: its type and what it is about.
    Long subjects (sector names) are cut to fit the column."""
    return f"{_KEY_PREFIX}{alert_type}:{(subject or '*')[:80]}"


def _redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def alert_raise(
    *,
    alert_type: str,
    severity: str,
    message: str,
    symbol: str | None = None,
    subject: str | None = None,
    current_value: Decimal | None = None,
    limit_value: Decimal | None = None,
    action_taken: str = "",
    details: Mapping | None = None,
    dedup_seconds: int,
    at: dt.datetime | None = None,
    client=None,
) -> RiskAlert | None:
    """Raise an alert once per `dedup_seconds` for (alert_type, subject) (subject defaults to
    the symbol). Returns the RiskAlert, or None when it was a repeat."""
    key = dedup_key(alert_type, symbol if subject is None else subject)
    client = client or _redis()
    if not client.set(key, "1", nx=True, ex=max(int(dedup_seconds), 1)):
        return None
    try:
        alert = services.alert_record(
            alert_type=str(alert_type),
            severity=str(severity),
            message=message,
            symbol=symbol,
            current_value=current_value,
            limit_value=limit_value,
            action_taken=action_taken,
            dedup_key=key,
            details=_plain(details or {}),
            at=at,
        )
    except Exception:
        client.delete(key)
        raise
    if alert is not None:
        logger.log(
            logging.CRITICAL if severity == Severity.CRITICAL else logging.WARNING,
            "Risk alert %s%s: %s%s",
            alert_type,
            f" {symbol}" if symbol else "",
            message,
            f" Action: {action_taken}" if action_taken else "",
            extra={
                "metadata": {
                    "alert_id": alert.pk,
                    "alert_type": str(alert_type),
                    "symbol": symbol,
                    "current_value": str(current_value),
                    "limit_value": str(limit_value),
                }
            },
        )
    return alert


def breach_raise(
    breach: Breach, *, action_taken: str, dedup_seconds: int, at=None, client=None
) -> RiskAlert | None:
    return alert_raise(
        alert_type=breach.alert_type,
        severity=breach.severity,
        message=breach.message,
        symbol=breach.symbol,
        subject=breach.subject,
        current_value=breach.current,
        limit_value=breach.limit,
        action_taken=action_taken,
        details=breach.details,
        dedup_seconds=dedup_seconds,
        at=at,
        client=client,
    )


__all__ = [
    "AlertType",
    "Breach",
    "alert_raise",
    "breach_raise",
    "dedup_key",
    "limit_breaches",
]
