"""The strategy interface: what a strategy is, what it is given and what it returns.

A strategy is a class registered by its `kind` (trading.strategies.registry()). An operator
configures it as a `Strategy` row (name, kind, parameters, symbols, interval, allocation); the
strategy engine makes one instance per row and calls it on every closed candle of its symbols.

    from trading.strategies.base import BaseStrategy, Param, SignalIntent, register

    @register
    class Breakout(BaseStrategy):
        kind = "breakout"                  # the registry key, stored in Strategy.kind
        label = "N-candle breakout"
        parameters = {
            "window": Param(int, 20, min=2, max=150, help="Candles of the range."),
        }

        def history(self) -> int:          # closes wanted in ctx.closes (current one included)
            return self.params["window"] + 1

        def on_candle(self, ctx):
            closes = ctx.closes
            if len(closes) < self.history():
                return []                  # not enough history yet: no opinion
            if closes[-1] > max(closes[:-1]) and ctx.flat:
                return [SignalIntent("BUY", reason="new high")]
            return []

Parameters. `parameters` maps each name to a `Param(type, default, min=None, max=None,
help="", choices=())`; types are int, float, Decimal, bool, str and datetime.time ("HH:MM").
`validate_parameters(kind, params)` checks a dict against them (unknown names, wrong types,
out-of-bounds values are InvalidInput naming the parameter) and fills in the defaults; a class
adds checks across parameters in `check(params)` (e.g. fast < slow). The Strategy row stores
the JSON form; the instance gets the typed values in `self.params`.

Hooks. `on_candle(ctx)` runs on `candle_closed`, `on_indicators(ctx)` on `indicators_updated`
(ctx.indicators then holds the indicators engine's values for that candle); each returns a
list of SignalIntent (usually empty). Override either or both; the engine calls only what is
overridden. At most one signal per (strategy, symbol, interval, candle) is stored: if both
hooks signal on the same candle, the first one stored stands.

The rules a strategy keeps, because backtests drive the same classes with a simulated clock
over stored candles (DESIGN.md, "Coming after the first issues"):
- No wall-clock time, no I/O, no database, no Redis: everything comes in through ctx (the
  candle's own times are the clock: ctx.candle.time opens it, ctx.candle_end closes it).
- No state between calls: the engine may restart, reload or replay at any point, so a
  decision must follow from ctx alone (ctx.holding says what the strategy owns).
- ctx.closes may be shorter than history() (a new symbol, a flushed Redis): say nothing then.
- Exceptions are allowed but costly: a strategy that raises is disabled by the engine (with a
  risk_alert and a system log) until an operator enables it again.

Avoiding repeated signals: a strategy buys only when ctx.flat (it holds none and has no open
buy order) and sells only what ctx.sellable says (held shares not already in an open sell
order); the built-ins do so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, ClassVar

from marketdata.engines.indicators import INTERVAL_LENGTHS
from marketdata.krx import SEOUL
from marketdata.types import Candle
from qbsite.exceptions import InvalidInput
from trading.models import Side

BUY = Side.BUY.value
SELL = Side.SELL.value

PARAM_TYPES = (int, float, Decimal, bool, str, dt.time)


class ParameterError(InvalidInput):
    """Parameters that do not fit the strategy class. `errors` maps each bad parameter to what
    is wrong with it (the admin form puts them next to the field); `message` says it all."""

    code = "strategy_parameters"

    def __init__(self, kind: str, errors: Mapping[str, str]):
        self.errors = dict(errors)
        listed = "; ".join(f"{name}: {problem}" for name, problem in self.errors.items())
        super().__init__(
            f"Invalid parameters for {kind}: {listed}",
            details={"kind": kind, "parameters": self.errors},
        )


class InvalidIntent(InvalidInput):
    code = "signal_intent"


_TYPE_KEYS = {
    int: "int",
    float: "float",
    Decimal: "decimal",
    bool: "bool",
    str: "str",
    dt.time: "time",
}


def _type_name(kind: type) -> str:
    return {dt.time: "time (HH:MM)", Decimal: "decimal"}.get(kind, kind.__name__)


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter: its type, default and bounds (inclusive)."""

    type: type
    default: Any
    min: Any = None
    max: Any = None
    help: str = ""
    choices: tuple = ()

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise TypeError(
                f"Param type {self.type!r} is not one of {', '.join(map(_type_name, PARAM_TYPES))}."
            )
        # A default that breaks its own bounds is a bug in the class: refuse it at import.
        problem = self.problem(self.default)
        if problem:
            raise TypeError(f"Param default {self.default!r}: {problem}")

    def problem(self, value) -> str | None:
        """What is wrong with `value`, or None."""
        try:
            self.clean(value)
        except ValueError as exc:
            return str(exc)
        return None

    def clean(self, value):
        """The typed value, or ValueError saying what is wrong (without the parameter name)."""
        kind = self.type
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be a whole number, got {value!r}")
            typed = value
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise ValueError(f"must be a number, got {value!r}")
            typed = float(value)
            if not math.isfinite(typed):
                raise ValueError(f"must be a finite number, got {value!r}")
        elif kind is Decimal:
            if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
                raise ValueError(f"must be a number, got {value!r}")
            try:
                typed = Decimal(str(value).strip())
            except InvalidOperation:
                raise ValueError(f"must be a number, got {value!r}") from None
            if not typed.is_finite():
                raise ValueError(f"must be a finite number, got {value!r}")
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError(f"must be a string, got {value!r}")
            typed = value
        else:  # dt.time
            typed = _time_of_day(value)
        if self.choices and typed not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.min is not None and typed < self._bound(self.min):
            raise ValueError(f"must be at least {self._shown(self.min)}, got {value!r}")
        if self.max is not None and typed > self._bound(self.max):
            raise ValueError(f"must be at most {self._shown(self.max)}, got {value!r}")
        return typed

    def _bound(self, bound):
        return _time_of_day(bound) if self.type is dt.time else bound

    def _shown(self, bound) -> str:
        return self.to_json(self._bound(bound)) if self.type is dt.time else str(bound)

    def to_json(self, typed):
        """The JSON form stored in Strategy.parameters (Decimal as a string, time as HH:MM)."""
        if self.type is Decimal:
            return str(typed)
        if self.type is dt.time:
            return typed.strftime("%H:%M:%S" if typed.second else "%H:%M")
        return typed

    def schema(self) -> dict:
        """The declaration in JSON form (the API's list of kinds)."""
        return {
            "type": _TYPE_KEYS[self.type],
            "default": self.to_json(self.clean(self.default)),
            "min": None if self.min is None else self.to_json(self._bound(self.min)),
            "max": None if self.max is None else self.to_json(self._bound(self.max)),
            "choices": list(self.choices),
            "help": self.help,
        }

    def describe(self) -> str:
        """One line for the admin's help: type, default, bounds, help."""
        text = f"{_type_name(self.type)}, default {self.to_json(self.clean(self.default))}"
        if self.choices:
            text += f", one of {', '.join(map(str, self.choices))}"
        if self.min is not None and self.max is not None:
            text += f", {self._shown(self.min)} to {self._shown(self.max)}"
        elif self.min is not None:
            text += f", at least {self._shown(self.min)}"
        elif self.max is not None:
            text += f", at most {self._shown(self.max)}"
        return f"{text}. {self.help}".strip() if self.help else text


def _time_of_day(value) -> dt.time:
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise ValueError(f"must be a time of day without a time zone (Seoul), got {value!r}")
        return value
    if isinstance(value, str):
        try:
            parsed = dt.time.fromisoformat(value.strip())
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None and ":" in value:
            return parsed
    raise ValueError(f"must be a time of day as HH:MM (Seoul), got {value!r}")


@dataclass(frozen=True, slots=True)
class SignalIntent:
    """What a strategy asks for on one candle: BUY or SELL, how sure it is (0..1), why, and
    optionally how many shares (None: the orders engine sizes it from the allocation)."""

    action: str
    confidence: float | Decimal = 1
    reason: str = ""
    quantity: int | None = None

    def __post_init__(self) -> None:
        if self.action not in (BUY, SELL):
            raise InvalidIntent(f"A signal's action is BUY or SELL, got {self.action!r}.")
        confidence = self.confidence
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, (int, float, Decimal))
            or not (0 <= confidence <= 1)  # NaN fails this too
        ):
            raise InvalidIntent(
                f"A signal's confidence is a number from 0 to 1, got {confidence!r}."
            )
        if not isinstance(self.reason, str):
            raise InvalidIntent(f"A signal's reason is a string, got {self.reason!r}.")
        quantity = self.quantity
        if quantity is not None and (
            isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0
        ):
            raise InvalidIntent(
                f"A signal's quantity is a whole number of shares >= 1 or None, got {quantity!r}."
            )


@dataclass(frozen=True, slots=True)
class StrategyContext:
    """Everything a strategy sees on one candle (it sees nothing else).

    - symbol, interval; candle: the closed candle (open time ctx.candle.time, UTC; Decimal
      prices); candle_end: when it closed (the strategy's clock).
    - closes: recent closes, oldest first, Decimal, of closed candles only; the last one is
      ctx.candle.close. At most history() of them, fewer when fewer are known.
    - indicators: on_indicators, the indicators engine's values of this candle ({"sma_20",
      "rsi", "macd", "macd_signal", "macd_hist"}, floats or None while warming up); on
      on_candle, the same when the indicators hash already holds this candle, else None.
    - holding: the shares this strategy holds in the symbol (net of its own trades);
      open_buy / open_sell: shares still to fill in its open buy / sell orders.
    """

    symbol: str
    interval: str
    candle: Candle
    closes: tuple[Decimal, ...]
    holding: int = 0
    open_buy: int = 0
    open_sell: int = 0
    indicators: Mapping[str, float | None] | None = field(default=None)

    @property
    def candle_end(self) -> dt.datetime:
        return self.candle.time + INTERVAL_LENGTHS[self.interval]

    @property
    def candle_end_seoul(self) -> dt.datetime:
        return self.candle_end.astimezone(SEOUL)

    @property
    def flat(self) -> bool:
        """Holds none and has no buy on the way: a BUY would not repeat one."""
        return self.holding <= 0 and self.open_buy <= 0

    @property
    def sellable(self) -> int:
        """Shares held and not already being sold."""
        return max(0, self.holding - self.open_sell)


class BaseStrategy:
    """Subclass this, set `kind` and `parameters`, override on_candle and/or on_indicators."""

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[Mapping[str, Param]] = {}
    # The intervals it may run on; None = any interval a Strategy row allows.
    intervals: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, parameters: Mapping | None = None) -> None:
        self.params = MappingProxyType(clean_parameters(type(self), parameters or {}))

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Checks across parameters, on typed values: {parameter: what is wrong} ({} = fine)."""
        return {}

    def history(self) -> int:
        """How many closes (the current one included) the strategy wants in ctx.closes."""
        return 1

    def on_candle(self, ctx: StrategyContext) -> list[SignalIntent]:
        return []

    def on_indicators(self, ctx: StrategyContext) -> list[SignalIntent]:
        return []

    @classmethod
    def uses(cls, hook: str) -> bool:
        """Whether the class overrides `hook` ("on_candle" / "on_indicators")."""
        return getattr(cls, hook) is not getattr(BaseStrategy, hook)

    @classmethod
    def parameters_help(cls) -> str:
        """The declared parameters with their defaults, one per line (admin help)."""
        if not cls.parameters:
            return f"{cls.kind}: no parameters."
        lines = [f"{name}: {param.describe()}" for name, param in cls.parameters.items()]
        return f"{cls.kind}: " + "; ".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.params)!r})"


def clean_parameters(cls: type[BaseStrategy], params) -> dict[str, Any]:
    """Typed parameters of `cls` from `params` (JSON form or typed), defaults filled.

    Raises ParameterError listing every bad parameter: unknown names, wrong types, values out
    of bounds, and the class's own cross-parameter checks.
    """
    if not isinstance(params, Mapping):
        raise ParameterError(
            cls.kind, {"parameters": f"must be a JSON object, got {type(params).__name__}"}
        )
    errors: dict[str, str] = {}
    known = cls.parameters
    for name in params:
        if name not in known:
            names = ", ".join(known) or "none"
            errors[str(name)] = f"unknown parameter (parameters of {cls.kind}: {names})"
    typed: dict[str, Any] = {}
    for name, param in known.items():
        value = params.get(name, param.default)
        try:
            typed[name] = param.clean(value)
        except ValueError as exc:
            errors[name] = str(exc)
    if not errors:
        errors.update(cls.check(typed))
    if errors:
        raise ParameterError(cls.kind, errors)
    return typed


def parameters_json(cls: type[BaseStrategy], typed: Mapping[str, Any]) -> dict[str, Any]:
    return {name: cls.parameters[name].to_json(value) for name, value in typed.items()}


_REGISTRY: dict[str, type[BaseStrategy]] = {}


def register(cls: type[BaseStrategy]) -> type[BaseStrategy]:
    """Class decorator: make `cls` available under `cls.kind` (a kind is registered once)."""
    if not (isinstance(cls, type) and issubclass(cls, BaseStrategy)) or cls is BaseStrategy:
        raise TypeError(f"{cls!r} is not a BaseStrategy subclass.")
    if not cls.kind or not isinstance(cls.kind, str):
        raise TypeError(f"{cls.__name__} has no `kind`.")
    existing = _REGISTRY.get(cls.kind)
    if existing is not None and existing is not cls:
        raise TypeError(
            f"Strategy kind {cls.kind!r} is registered twice: "
            f"{existing.__module__}.{existing.__name__} and {cls.__module__}.{cls.__name__}."
        )
    for name, param in cls.parameters.items():
        if not isinstance(param, Param):
            raise TypeError(f"{cls.__name__}.parameters[{name!r}] is not a Param.")
    defaults = {name: param.clean(param.default) for name, param in cls.parameters.items()}
    problems = cls.check(defaults)
    if problems:
        raise TypeError(f"{cls.__name__}'s default parameters fail its own check: {problems}.")
    _REGISTRY[cls.kind] = cls
    return cls
