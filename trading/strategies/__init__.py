"""Strategies: the interface (base.py), the built-ins (builtin.py) and the registry by kind.

    registry()                        -> {kind: class}
    get_strategy_class(kind)          -> the class, or InvalidInput listing the known kinds
    validate_parameters(kind, params) -> the parameters as stored (JSON form, defaults filled),
                                         or InvalidInput (ParameterError) naming each bad one

Writes (Strategy rows, signals) are in trading.strategies.services; the engine that runs them
is trading.engines.strategy.
"""

from __future__ import annotations

from collections.abc import Mapping

from qbsite.exceptions import InvalidInput

from .base import (
    _REGISTRY,
    BaseStrategy,
    Param,
    ParameterError,
    SignalIntent,
    StrategyContext,
    clean_parameters,
    parameters_json,
    register,
)


def registry() -> dict[str, type[BaseStrategy]]:
    """Every registered strategy class by kind (the built-ins are always there)."""
    from . import builtin  # noqa: F401 - registers the built-ins on first use

    return dict(sorted(_REGISTRY.items()))


class UnknownStrategyKind(InvalidInput):
    code = "strategy_kind"


def get_strategy_class(kind: str) -> type[BaseStrategy]:
    known = registry()
    cls = known.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownStrategyKind(
            f"Unknown strategy kind {kind!r}; registered kinds: {', '.join(known)}.",
            details={"kind": repr(kind)},
        )
    return cls


def validate_parameters(kind: str, params: Mapping | None) -> dict:
    """`params` checked against the class of `kind`, in the JSON form Strategy.parameters
    stores, with every default filled in."""
    cls = get_strategy_class(kind)
    return parameters_json(cls, clean_parameters(cls, {} if params is None else params))


__all__ = [
    "BaseStrategy",
    "Param",
    "ParameterError",
    "SignalIntent",
    "StrategyContext",
    "UnknownStrategyKind",
    "get_strategy_class",
    "register",
    "registry",
    "validate_parameters",
]
