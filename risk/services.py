"""Writes of the risk app: limits (audited), the trading state, locks, alerts.

The interface the risk engine and the order path use (keep these names):

- `limits_get() -> RiskLimits`: the limits in force. Cheap: a process-local copy, reloaded at
  most every LIMITS_CACHE_SECONDS (1 s) and at once in the process that changed them. The order
  path does not even pay that: its check query reads risk_limits.updated_at, and
  `limits_for(updated_at)` reloads only when the row changed (exact, no extra round trip).
  Treat the instance as read-only.
- `limits_update(*, user, reason="", actor=None, **changes) -> list[LimitChange]`: validates
  and saves the changed fields (full_clean: each field's range, CHECK constraints behind it) and
  writes one LimitChange per changed field (field, old, new, who, when, why). The admin goes
  through it too. Unknown fields or bad values: InvalidInput naming them.
- `trading_state_get() -> str`: ACTIVE / REDUCING / HALTED (one primary-key read; the order path
  reads it inside its check statement instead).
- `trading_state_set(*, state, actor, reason, automatic=False) -> bool`: False when the state
  is already `state` (nothing written, nothing published). Otherwise the row is updated under a
  row lock, a TradingStateChange and a RiskAlert are written, and on commit
  `trading_state_changed` and `risk_alert` are published; HALTED then cancels every open order
  (trading.oms.order_cancel, each on its own, failures logged and left to the orders engine's
  recovery).
- `lock_create(*, kind, until, reason, actor, symbol=None, strategy=None, at=None) -> RiskLock`
  and `lock_remove(*, lock_id, actor, at=None) -> RiskLock` (removing a removed lock changes
  nothing). `risk.selectors.locks_active(now)` lists the live ones.
- `alert_record(*, alert_type, severity, message, ...) -> RiskAlert | None`: writes a RiskAlert
  and publishes `risk_alert` on commit. With a `dedup_key`, an alert of the same key within
  limits.alert_dedup_seconds is not written again (returns None).

Actors are strings: "admin:<user>", "api:<user>", "engine:<name>".
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.utils import timezone

from qbsite.events import EventType, publish
from qbsite.exceptions import InvalidInput, NotFound

from .models import (
    COUNT_LIMITS,
    LimitChange,
    LockKind,
    RiskAlert,
    RiskLimits,
    RiskLock,
    Severity,
    State,
    TradingState,
    TradingStateChange,
)

logger = logging.getLogger("qb.risk")

SOURCE = "risk"
LIMITS_CACHE_SECONDS = 1.0
# Fields limits_update may change (everything but the key and the timestamp).
LIMIT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in RiskLimits._meta.concrete_fields if f.name not in ("id", "updated_at")
)


class RiskError(InvalidInput):
    code = "risk_invalid"


# --- limits ----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cached: tuple[RiskLimits, float] | None = None  # (instance, monotonic time loaded)


def _load_limits() -> RiskLimits:
    limits = RiskLimits.objects.filter(pk=1).first()
    if limits is None:  # a flushed test database; the migration creates it otherwise
        limits, _ = RiskLimits.objects.get_or_create(pk=1)
    return limits


def _remember(limits: RiskLimits) -> RiskLimits:
    global _cached
    with _cache_lock:
        _cached = (limits, time.monotonic())
    return limits


def limits_forget() -> None:
    """Drop this process's copy of the limits (the next limits_get() reads them)."""
    global _cached
    with _cache_lock:
        _cached = None


def _uncommitted_change() -> bool:
    """True when this connection changed the limits in a transaction not yet committed (or
    rolled back): its reads must not be shared through the cache."""
    return getattr(connection, "_qb_risk_limits_dirty", False)


def _set_dirty(value: bool) -> None:
    connection._qb_risk_limits_dirty = value


def limits_get() -> RiskLimits:
    """The limits in force (at most LIMITS_CACHE_SECONDS old in another process)."""
    if _uncommitted_change():
        return _load_limits()
    cached = _cached
    if cached is not None and time.monotonic() - cached[1] < LIMITS_CACHE_SECONDS:
        return cached[0]
    return _remember(_load_limits())


def limits_for(updated_at: dt.datetime | None) -> RiskLimits:
    """The limits whose row was last changed at `updated_at` (read by the caller's own query):
    the cached copy when it is that version, else a fresh read."""
    cached = _cached
    if cached is not None and updated_at is not None and cached[0].updated_at == updated_at:
        return cached[0]
    limits = _load_limits()
    return limits if _uncommitted_change() else _remember(limits)


def _committed() -> None:
    _set_dirty(False)
    limits_forget()


def limits_reset_cache() -> None:
    """Forget the cached limits and this connection's uncommitted mark (tests; a rollback)."""
    _committed()


def _text(value) -> str:
    return "" if value is None else str(value)


def limits_update(
    *, user=None, reason: str = "", actor: str | None = None, **changes
) -> list[LimitChange]:
    """Change some limits; one LimitChange per field whose value changed. Returns them (empty
    when nothing changed)."""
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise RiskError(
            f"Unknown risk limit(s): {', '.join(unknown)}. Known: {', '.join(LIMIT_FIELDS)}.",
            details={"unknown": unknown},
        )
    if actor is None:
        actor = f"user:{user.get_username()}" if user is not None else "system"
    now = timezone.now()
    with transaction.atomic():
        limits = RiskLimits.objects.select_for_update().filter(pk=1).first()
        if limits is None:
            RiskLimits.objects.get_or_create(pk=1)
            limits = RiskLimits.objects.select_for_update().get(pk=1)
        old = {name: getattr(limits, name) for name in changes}
        for name, value in changes.items():
            field = RiskLimits._meta.get_field(name)
            try:
                setattr(limits, name, field.to_python(_limit_value(name, field, value)))
            except ValidationError as exc:
                raise RiskError(
                    f"{name}: {value!r} is not valid ({'; '.join(exc.messages)}).",
                    details={name: exc.messages},
                ) from None
        _check_relations(limits)  # first: its messages name the limits
        try:
            limits.full_clean()
        except ValidationError as exc:
            raise RiskError(
                "Invalid risk limits: "
                + "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()),
                details=exc.message_dict,
            ) from None
        changed = [name for name in changes if getattr(limits, name) != old[name]]
        if not changed:
            return []
        limits.save(update_fields=[*changed, "updated_at"])
        records = LimitChange.objects.bulk_create(
            LimitChange(
                field=name,
                old_value=_text(old[name]),
                new_value=_text(getattr(limits, name)),
                changed_by=user,
                actor=actor[:64],
                changed_at=now,
                reason=reason,
            )
            for name in changed
        )
        # Until this commits, this connection reads the limits uncached (a rollback must not
        # leave its values in the cache); at commit everyone's copy is dropped.
        limits_forget()
        _set_dirty(True)
        transaction.on_commit(_committed)
    logger.info(
        "Risk limits changed by %s: %s",
        actor,
        ", ".join(f"{r.field} {r.old_value} -> {r.new_value}" for r in records),
    )
    return records


def _limit_value(name: str, field, value):
    """A limit as given (a JSON body's numbers are floats), before the field parses it: a
    float as the decimal it is written as (0.05, not its binary neighbour, which has more
    places than the field); a bool or a fraction where a whole number is wanted is refused
    (the field would make True 1 and cut 2.9 to 2)."""
    if isinstance(value, bool):
        raise RiskError(f"{name}: {value!r} is not a number.", details={name: ["Not a number."]})
    if isinstance(value, float) and math.isfinite(value):
        value = Decimal(repr(value))
    if (
        isinstance(field, models.IntegerField)
        and isinstance(value, Decimal)
        and value.is_finite()
        and value != value.to_integral_value()
    ):
        raise RiskError(
            f"{name}: {value} is not a whole number.", details={name: ["A whole number."]}
        )
    return value


def _check_relations(limits: RiskLimits) -> None:
    """What full_clean cannot see: limits that only make sense together (the database has the
    same CHECKs; this says it in words before it gets there)."""
    problems = []
    ratios = ("max_position_ratio", "max_sector_ratio", "max_exposure_ratio")
    for name in (*ratios, "stop_loss_ratio", "take_profit_ratio", "trailing_stop_ratio"):
        value = getattr(limits, name)
        if not (Decimal(0) < value <= 1):
            problems.append(f"{name} must be above 0 and at most 1 (got {value})")
    if not (Decimal(0) <= limits.min_cash_reserve_ratio < 1):
        problems.append(
            f"min_cash_reserve_ratio must be at least 0 and below 1 "
            f"(got {limits.min_cash_reserve_ratio})"
        )
    if limits.min_order_value < 0:
        problems.append(f"min_order_value must not be negative (got {limits.min_order_value})")
    if limits.max_order_value <= 0 or limits.max_order_value < limits.min_order_value:
        problems.append(
            f"max_order_value ({limits.max_order_value}) must be positive and at least "
            f"min_order_value ({limits.min_order_value})"
        )
    for name in ("daily_loss_limit", "monthly_loss_limit"):
        if getattr(limits, name) <= 0:
            problems.append(
                f"{name} must be a positive amount of KRW (got {getattr(limits, name)})"
            )
    for name in COUNT_LIMITS:
        if getattr(limits, name) <= 0:
            problems.append(f"{name} must be at least 1 (got {getattr(limits, name)})")
    if problems:
        raise RiskError("Invalid risk limits: " + "; ".join(problems) + ".")


# --- trading state ---------------------------------------------------------------------------

_STATE_SQL = f"SELECT state FROM {TradingState._meta.db_table} WHERE id = 1"


def trading_state_get() -> str:
    """The trading state: ACTIVE, REDUCING or HALTED (ACTIVE when the row is missing)."""
    state = TradingState.objects.filter(pk=1).values_list("state", flat=True).first()
    return state or State.ACTIVE


def trading_state_lock() -> TradingState:
    """The trading state row, locked until the caller's transaction ends (call inside
    atomic): a decision made on it cannot be overtaken by another change meanwhile."""
    row = TradingState.objects.select_for_update().filter(pk=1).first()
    if row is None:
        TradingState.objects.get_or_create(pk=1)
        row = TradingState.objects.select_for_update().get(pk=1)
    return row


_locked_state = trading_state_lock


_STATE_SEVERITY = {
    State.ACTIVE: Severity.WARNING,
    State.REDUCING: Severity.WARNING,
    State.HALTED: Severity.CRITICAL,
}
_STATE_ACTION = {
    State.ACTIVE: "Trading resumed: orders are checked as usual.",
    State.REDUCING: "Only orders that reduce a position are allowed.",
    State.HALTED: "No new orders; open orders are being canceled.",
}


def trading_state_set(
    *,
    state: str,
    actor: str,
    reason: str,
    automatic: bool = False,
    at: dt.datetime | None = None,
) -> bool:
    """Change the trading state. False (and nothing done) when it is already `state`."""
    if state not in State.values:
        raise RiskError(
            f"Unknown trading state {state!r}; one of {', '.join(State.values)}.",
            details={"state": state},
        )
    if not actor or not isinstance(actor, str):
        raise RiskError("A trading state change needs an actor (who made it).")
    at = at or timezone.now()
    with transaction.atomic():
        row = _locked_state()
        previous = row.state
        if previous == state:
            return False
        row.state = state
        row.reason = reason
        row.changed_by = actor[:64]
        row.changed_at = at
        row.automatic = automatic
        row.save()
        TradingStateChange.objects.create(
            from_state=previous,
            to_state=state,
            reason=reason,
            actor=actor[:64],
            automatic=automatic,
            at=at,
        )
        publish(
            EventType.TRADING_STATE_CHANGED,
            {
                "state": state,
                "previous": previous,
                "reason": reason,
                "actor": actor,
                "automatic": automatic,
                "changed_at": at,
            },
            source=SOURCE,
        )
        alert_record(
            alert_type="TRADING_STATE",
            severity=_STATE_SEVERITY[state],
            message=f"Trading state {previous} -> {state} by {actor}"
            + (" (automatic)" if automatic else "")
            + (f": {reason}" if reason else "."),
            action_taken=_STATE_ACTION[state],
            details={"state": state, "previous": previous, "automatic": automatic},
            at=at,
        )
        if state == State.HALTED:
            transaction.on_commit(lambda: cancel_open_orders(actor=actor, reason=reason))
    logger.warning(
        "Trading state %s -> %s by %s%s: %s",
        previous,
        state,
        actor,
        " (automatic)" if automatic else "",
        reason,
    )
    return True


def cancel_open_orders(*, actor: str, reason: str = "") -> int:
    """Cancel every open (or NEW) order through the OMS; returns how many were asked. Each is
    its own transaction; one failing is logged and the rest go on."""
    from trading import oms  # trading.oms imports risk (the checks): import here, not above
    from trading.models import Order
    from trading.states import CANCELABLE, IllegalTransition

    ids = list(
        Order.objects.filter(status__in=CANCELABLE).order_by("id").values_list("pk", flat=True)
    )
    why = f"Trading halted: {reason}" if reason else "Trading halted."
    for pk in ids:
        try:
            oms.order_cancel(order_id=pk, actor=actor, reason=why)
        except IllegalTransition:
            logger.info("Halt: order %s settled before its cancel (nothing to cancel).", pk)
        except Exception:
            logger.exception("Halt: cancel of order %s failed; the orders engine retries.", pk)
    return len(ids)


# --- locks -----------------------------------------------------------------------------------


def lock_create(
    *,
    kind: str,
    until: dt.datetime,
    reason: str,
    actor: str,
    symbol=None,
    strategy=None,
    at: dt.datetime | None = None,
) -> RiskLock:
    """Lock a symbol, a strategy, both, or (neither) everything until `until`. `symbol`: a
    Stock or its code; `strategy`: a Strategy or its id."""
    if kind not in LockKind.values:
        raise RiskError(f"Unknown lock kind {kind!r}; one of {', '.join(LockKind.values)}.")
    if not isinstance(until, dt.datetime) or until.utcoffset() is None:
        raise RiskError(f"until must be a timezone-aware datetime, got {until!r}.")
    at = at or timezone.now()
    if until <= at:
        raise RiskError(f"until ({until.isoformat()}) must be after now ({at.isoformat()}).")
    if not actor:
        raise RiskError("A lock needs an actor (who made it).")
    lock = RiskLock(
        kind=kind,
        until=until,
        reason=reason,
        created_by=actor[:64],
        created_at=at,
    )
    if symbol is not None:
        from marketdata.models import Stock

        code = symbol.pk if isinstance(symbol, Stock) else symbol
        if not Stock.objects.filter(pk=code).exists():
            raise NotFound(f"No stock {code!r}.")
        lock.symbol_id = code
    if strategy is not None:
        from trading.models import Strategy

        pk = strategy.pk if isinstance(strategy, Strategy) else strategy
        if not Strategy.objects.filter(pk=pk).exists():
            raise NotFound(f"No strategy {pk!r}.")
        lock.strategy_id = pk
    with transaction.atomic():
        lock.save()
    logger.info("Lock %s created by %s: %s", lock, actor, reason)
    return lock


def lock_remove(*, lock_id: int, actor: str, at: dt.datetime | None = None) -> RiskLock:
    """End a lock now. A lock already removed is returned unchanged."""
    if not actor:
        raise RiskError("Removing a lock needs an actor (who removed it).")
    with transaction.atomic():
        lock = RiskLock.objects.select_for_update().filter(pk=lock_id).first()
        if lock is None:
            raise NotFound(f"No risk lock {lock_id}.")
        if lock.removed_at is None:
            lock.removed_at = at or timezone.now()
            lock.removed_by = actor[:64]
            lock.save(update_fields=["removed_at", "removed_by"])
            logger.info("Lock %s removed by %s", lock_id, actor)
    return lock


# --- alerts ----------------------------------------------------------------------------------


def _alert_event(alert: RiskAlert) -> dict:
    return {
        "id": alert.pk,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "symbol": alert.symbol_id,
        "current_value": alert.current_value,
        "limit_value": alert.limit_value,
        "action_taken": alert.action_taken,
        "message": alert.message,
        "details": alert.details,
        "created_at": alert.created_at,
    }


def alert_record(
    *,
    alert_type: str,
    severity: str,
    message: str,
    symbol: str | None = None,
    current_value: Decimal | None = None,
    limit_value: Decimal | None = None,
    action_taken: str = "",
    dedup_key: str = "",
    details: dict | None = None,
    at: dt.datetime | None = None,
) -> RiskAlert | None:
    """Write a RiskAlert and publish `risk_alert` on commit. With `dedup_key`: None (nothing
    written) when an alert of that key was made within limits.alert_dedup_seconds."""
    if severity not in Severity.values:
        raise RiskError(f"Unknown severity {severity!r}; one of {', '.join(Severity.values)}.")
    if not alert_type:
        raise RiskError("An alert needs an alert_type.")
    at = at or timezone.now()
    with transaction.atomic():
        if dedup_key:
            window = dt.timedelta(seconds=limits_get().alert_dedup_seconds)
            if RiskAlert.objects.filter(dedup_key=dedup_key, created_at__gt=at - window).exists():
                return None
        alert = RiskAlert.objects.create(
            alert_type=alert_type,
            severity=severity,
            message=message,
            symbol_id=symbol,
            current_value=current_value,
            limit_value=limit_value,
            action_taken=action_taken,
            dedup_key=dedup_key,
            details=details or {},
            created_at=at,
        )
        publish(EventType.RISK_ALERT, _alert_event(alert), source=SOURCE)
    return alert


__all__ = [
    "LIMITS_CACHE_SECONDS",
    "LIMIT_FIELDS",
    "RiskError",
    "alert_record",
    "cancel_open_orders",
    "limits_for",
    "limits_forget",
    "limits_get",
    "limits_reset_cache",
    "limits_update",
    "lock_create",
    "lock_remove",
    "trading_state_get",
    "trading_state_lock",
    "trading_state_set",
]
