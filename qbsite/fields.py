"""Column shapes shared by every app: one place decides how money, prices and symbols are stored."""

from django.core.validators import RegexValidator
from django.db import models

# KRX short codes: six characters, digits or capital letters (e.g. 005930, 0001A0).
SYMBOL_REGEX = r"^[0-9A-Z]{6}$"
symbol_validator = RegexValidator(
    SYMBOL_REGEX, "A KRX symbol is six digits or capital letters, e.g. 005930."
)


def PriceField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    """A price in KRW. KRX prices are whole won; two places leave room for ETF NAVs."""
    kwargs.setdefault("max_digits", 14)
    kwargs.setdefault("decimal_places", 2)
    return models.DecimalField(**kwargs)


def MoneyField(**kwargs) -> models.DecimalField:  # noqa: N802
    """An amount of KRW (values, PnL, fees). Four places keep sub-won fees exact until rounding."""
    kwargs.setdefault("max_digits", 20)
    kwargs.setdefault("decimal_places", 4)
    return models.DecimalField(**kwargs)


def RatioField(**kwargs) -> models.DecimalField:  # noqa: N802
    """A ratio or rate (0.1234 = 12.34 %)."""
    kwargs.setdefault("max_digits", 12)
    kwargs.setdefault("decimal_places", 6)
    return models.DecimalField(**kwargs)


def SymbolField(**kwargs) -> models.CharField:  # noqa: N802
    kwargs.setdefault("max_length", 6)
    kwargs.setdefault("validators", [symbol_validator])
    return models.CharField(**kwargs)
