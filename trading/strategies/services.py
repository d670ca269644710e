"""Writes of strategies and signals.

- strategy_create / strategy_update / strategy_delete: a Strategy row whose parameters fit its
  class (validate_parameters), whose symbols exist in stocks_metadata, and whose interval the
  model and the class allow. Enabling one clears its disabled_reason.
- strategy_disable: what the engine does to a strategy that raised: disabled with the reason,
  a `risk_alert` (STRATEGY_ERROR, CRITICAL) on commit and an ERROR in system_logs.
- signal_record: one Signal per (strategy, symbol, interval, candle time). A replayed candle
  returns the stored signal and publishes nothing; a new one publishes `trading_signal` on
  commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError

from marketdata.models import Stock
from qbsite.events import EventType, publish
from qbsite.exceptions import Conflict, InvalidInput
from qbsite.fields import SYMBOL_REGEX
from trading.models import Side, Signal, SignalOutcome, Strategy, Trade

from . import get_strategy_class, validate_parameters

logger = logging.getLogger("qb.strategies")

SOURCE = "strategy"

_CONFIDENCE_PLACES = Decimal("0.000001")  # Signal.confidence: RatioField, 6 places
_PRICE_PLACES = Decimal("0.01")  # Signal.price: PriceField, 2 places
_CHANGEABLE = ("name", "kind", "parameters", "symbols", "interval", "enabled", "capital_allocation")
DISABLED_REASON_MAX = 2000


def _allowed_intervals() -> tuple[str, ...]:
    """The intervals the strategies table's CHECK allows (the model is their one home)."""
    for constraint in Strategy._meta.constraints:
        if constraint.name == "strategies_interval_valid":
            [(lookup, values)] = constraint.condition.children
            assert lookup == "interval__in", lookup
            return tuple(values)
    raise LookupError("Strategy has no strategies_interval_valid constraint.")


INTERVALS = _allowed_intervals()
_SYMBOL = re.compile(SYMBOL_REGEX)


class StrategyError(InvalidInput):
    code = "strategy_invalid"


class SignalError(InvalidInput):
    code = "signal_invalid"


# --- strategies ------------------------------------------------------------------------------


def _symbols(value) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise StrategyError(
            f"symbols must be a list of KRX symbols, got {value!r}.", details={"field": "symbols"}
        )
    symbols = list(dict.fromkeys(value))  # duplicates dropped, order kept
    bad = [s for s in symbols if not isinstance(s, str) or not _SYMBOL.match(s)]
    if bad:
        raise StrategyError(
            f"symbols: {bad[0]!r} is not a KRX symbol (six digits or capital letters, "
            "e.g. 005930).",
            details={"field": "symbols"},
        )
    return symbols


def strategy_validate(strategy: Strategy, *, previous_name: str | None = None) -> None:
    """The checks beyond the model's own (full_clean): kind, parameters, interval, symbols,
    and the name of a strategy with trades. Raises InvalidInput (details["field"] names the
    field; ParameterError for the parameters, UnknownStrategyKind for the kind) or Conflict.
    Sets the cleaned parameters (JSON form, defaults filled) and symbols on `strategy`.
    The admin form calls it to show these as field errors before the service runs."""
    cls = get_strategy_class(strategy.kind)
    strategy.parameters = validate_parameters(strategy.kind, strategy.parameters)
    if strategy.interval not in INTERVALS:
        raise StrategyError(
            f"interval {strategy.interval!r} is not one of {', '.join(INTERVALS)}.",
            details={"field": "interval"},
        )
    if cls.intervals is not None and strategy.interval not in cls.intervals:
        raise StrategyError(
            f"{strategy.kind} runs on {', '.join(cls.intervals)} candles only, "
            f"not {strategy.interval}.",
            details={"field": "interval"},
        )
    strategy.symbols = _symbols(strategy.symbols)
    if strategy.symbols:
        known = set(
            Stock.objects.filter(symbol__in=strategy.symbols).values_list("symbol", flat=True)
        )
        missing = [s for s in strategy.symbols if s not in known]
        if missing:
            raise StrategyError(
                f"Unknown symbol{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                "not in stocks_metadata (load or add the stock first).",
                details={"field": "symbols", "missing": missing},
            )
    elif strategy.enabled:
        raise StrategyError(
            "An enabled strategy needs at least one symbol.", details={"field": "symbols"}
        )
    if (
        previous_name is not None
        and strategy.name != previous_name
        and Trade.objects.filter(strategy=previous_name).exists()
    ):
        raise Conflict(
            f"Strategy {previous_name} has trades recorded under its name; it cannot be "
            "renamed (create a new strategy instead).",
            code="strategy_renamed",
            details={"field": "name"},
        )


def strategy_create(
    *,
    name: str,
    kind: str,
    capital_allocation: Decimal,
    parameters: dict | None = None,
    symbols: Iterable[str] = (),
    interval: str = "1m",
    enabled: bool = False,
) -> Strategy:
    """A new Strategy; its parameters are stored as validate_parameters() returns them."""
    strategy = Strategy(
        name=name,
        kind=kind,
        parameters={} if parameters is None else parameters,
        symbols=symbols,
        interval=interval,
        enabled=enabled,
        capital_allocation=capital_allocation,
    )
    strategy_validate(strategy)
    strategy.full_clean()
    with transaction.atomic():
        strategy.save(force_insert=True)
    logger.info("Strategy %s (%s) created, enabled=%s.", strategy.name, strategy.kind, enabled)
    return strategy


def strategy_update(*, strategy: Strategy, **changes) -> Strategy:
    """Change some of name, kind, parameters, symbols, interval, enabled, capital_allocation.

    Parameters are validated against the (new) kind: changing the kind without parameters
    checks the old ones against the new class. Enabling clears disabled_reason. A strategy
    with trades keeps its name (trades record it by name).
    """
    unknown = set(changes) - set(_CHANGEABLE)
    if unknown:
        raise StrategyError(
            f"Cannot change {', '.join(sorted(unknown))} of a strategy "
            f"(changeable: {', '.join(_CHANGEABLE)})."
        )
    if not changes:
        return strategy
    with transaction.atomic():
        previous_name = None
        if strategy.pk is not None:
            previous_name = (
                Strategy.objects.select_for_update()
                .values_list("name", flat=True)
                .get(pk=strategy.pk)
            )
        for name, value in changes.items():
            setattr(strategy, name, value)
        if changes.get("enabled"):
            strategy.disabled_reason = ""
        strategy_validate(strategy, previous_name=previous_name)
        strategy.full_clean(validate_unique="name" in changes)
        strategy.save()
    return strategy


def strategy_delete(*, strategy: Strategy) -> None:
    """Delete a strategy that never signaled nor ordered; others are disabled instead."""
    try:
        with transaction.atomic():
            strategy.delete()
    except ProtectedError:
        raise Conflict(
            f"Strategy {strategy.name} has signals or orders and cannot be deleted; "
            "disable it instead.",
            code="protected",
        ) from None


def strategy_disable(
    *,
    strategy: Strategy,
    reason: str,
    symbol: str | None = None,
    correlation_id: str | None = None,
    exc: BaseException | None = None,
) -> Strategy:
    """Disable a strategy that failed: enabled False, disabled_reason set, a `risk_alert`
    (STRATEGY_ERROR, CRITICAL) published on commit and an ERROR logged (system_logs).

    Idempotent: a strategy already disabled is returned as it is, with no second alert.
    `symbol`: the symbol it was evaluating, if any; `exc`: the exception, whose traceback goes
    to the log. Updates `strategy` in place too.
    """
    reason = str(reason).strip() or "no reason given"
    if len(reason) > DISABLED_REASON_MAX:
        reason = reason[: DISABLED_REASON_MAX - 3] + "..."
    with transaction.atomic():
        current = Strategy.objects.select_for_update().get(pk=strategy.pk)
        if not current.enabled:
            strategy.enabled, strategy.disabled_reason = False, current.disabled_reason
            return current
        current.enabled = False
        current.disabled_reason = reason
        current.save(update_fields=["enabled", "disabled_reason", "updated_at"])
        publish(
            EventType.RISK_ALERT,
            {
                "alert_type": "STRATEGY_ERROR",
                "strategy": current.name,
                "symbol": symbol,
                "message": reason,
                "severity": "CRITICAL",
                "action_taken": "strategy disabled",
            },
            source=SOURCE,
            correlation_id=correlation_id,
        )
    strategy.enabled, strategy.disabled_reason = False, reason
    logger.error(
        "Strategy %s disabled: %s",
        current.name,
        reason,
        extra={
            "metadata": {
                "strategy": current.name,
                "kind": current.kind,
                "symbol": symbol,
                "correlation_id": correlation_id,
            }
        },
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
    return current


# --- signals ---------------------------------------------------------------------------------


def _confidence(value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise SignalError(f"confidence must be a number from 0 to 1, got {value!r}.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SignalError(f"confidence must be a number from 0 to 1, got {value!r}.") from None
    if not number.is_finite() or not 0 <= number <= 1:
        raise SignalError(f"confidence must be a number from 0 to 1, got {value!r}.")
    return number.quantize(_CONFIDENCE_PLACES, rounding=ROUND_HALF_EVEN)


def _signal_fields(*, action, price, quantity, time, interval, reason) -> None:
    if action not in Side.values:
        raise SignalError(f"action must be BUY or SELL, got {action!r}.")
    if isinstance(price, float) or not isinstance(price, (Decimal, int)) or isinstance(price, bool):
        raise SignalError(f"price must be a Decimal, got {price!r}.")
    if not Decimal(price).is_finite() or price <= 0:
        raise SignalError(f"price must be positive, got {price!r}.")
    if quantity is not None and (
        isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0
    ):
        raise SignalError(f"quantity must be a whole number >= 1 or None, got {quantity!r}.")
    if not isinstance(time, dt.datetime) or time.utcoffset() is None:
        raise SignalError(f"time must be a timezone-aware datetime, got {time!r}.")
    if interval not in INTERVALS:
        raise SignalError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}.")
    if not isinstance(reason, str):
        raise SignalError(f"reason must be a string, got {reason!r}.")


def _insert_sql() -> str:
    meta = Signal._meta
    columns = [
        meta.get_field(name).column
        for name in (
            "strategy",
            "symbol",
            "interval",
            "time",
            "action",
            "confidence",
            "price",
            "quantity",
            "reason",
            "created_at",
            "outcome",
            "outcome_reason",
        )
    ]
    key = [meta.get_field(name).column for name in ("strategy", "symbol", "interval", "time")]
    quote = connection.ops.quote_name
    return (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(map(quote, columns))})"
        f" VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON CONFLICT ({', '.join(map(quote, key))}) DO NOTHING"
        f" RETURNING {quote(meta.pk.column)}"
    )


_INSERT_SQL: str | None = None


def signal_record(
    *,
    strategy: Strategy,
    symbol: str,
    interval: str,
    time: dt.datetime,
    action: str,
    price: Decimal,
    confidence=1,
    quantity: int | None = None,
    reason: str = "",
    correlation_id: str | None = None,
    created_at: dt.datetime | None = None,
) -> tuple[Signal, bool]:
    """Store the signal of `strategy` on the candle (symbol, interval, time = open time).

    Returns (signal, created). The UNIQUE (strategy, symbol, interval, time) makes a replayed
    candle a no-op: the stored signal is returned (created False) and nothing is published.
    A new one publishes `trading_signal` once its row is committed, with data
    {signal_id, strategy, symbol, action, price, quantity, confidence, time} and
    `correlation_id` (the candle event's). One INSERT ... ON CONFLICT DO NOTHING: no race
    between two engines on the same candle can make two.
    """
    _signal_fields(
        action=action,
        price=price,
        quantity=quantity,
        time=time,
        interval=interval,
        reason=reason,
    )
    confidence = _confidence(confidence)
    price = Decimal(price).quantize(_PRICE_PLACES)  # what Signal.price (2 places) stores
    created_at = created_at or dt.datetime.now(dt.UTC)
    global _INSERT_SQL
    if _INSERT_SQL is None:
        _INSERT_SQL = _insert_sql()
    row = [
        strategy.pk,
        symbol,
        interval,
        time,
        action,
        confidence,
        price,
        quantity,
        reason,
        created_at,
        SignalOutcome.PENDING,
        "",
    ]
    # Outside a transaction the INSERT is one statement in autocommit (it commits by itself:
    # no COMMIT round trip on the strategy engine's path); inside one, a savepoint keeps a
    # refused row from breaking the caller's transaction.
    outer = transaction.get_connection().in_atomic_block
    try:
        with transaction.atomic() if outer else contextlib.nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(_INSERT_SQL, row)
                inserted = cursor.fetchone()
            if inserted is None:
                existing = Signal.objects.get(
                    strategy_id=strategy.pk, symbol_id=symbol, interval=interval, time=time
                )
                return existing, False
            signal = Signal(
                pk=inserted[0],
                strategy=strategy,
                symbol_id=symbol,
                interval=interval,
                time=time,
                action=action,
                confidence=confidence,
                price=price,
                quantity=quantity,
                reason=reason,
                created_at=created_at,
                outcome=SignalOutcome.PENDING,
                outcome_reason="",
            )
            signal._state.adding = False
            publish(
                EventType.TRADING_SIGNAL,
                {
                    "signal_id": signal.pk,
                    "strategy": strategy.name,
                    "symbol": symbol,
                    "action": action,
                    "price": price,
                    "quantity": quantity,
                    "confidence": confidence,
                    "time": time,
                },
                source=SOURCE,
                correlation_id=correlation_id,
                committed=True,
            )
    except IntegrityError as exc:
        # Not the candle key (ON CONFLICT takes that): a foreign key (checked at commit:
        # Django makes them deferred) or a CHECK.
        raise SignalError(
            f"Signal of {strategy.name} on {symbol} refused by the database: "
            f"{str(exc).splitlines()[0]}",
        ) from None
    return signal, True
