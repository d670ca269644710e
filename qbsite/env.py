"""Typed readers for settings from the environment.

Each reader takes the variable's name and a default, and raises ImproperlyConfigured
naming the variable and the bad value when the value cannot be used. Secrets are also read
from ``<NAME>_FILE`` (Docker / Kubernetes secrets); a secret's value is never echoed back.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_UNSET = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?B?)\s*$", re.IGNORECASE)


def load_dotenv_file(path: Path) -> None:
    """Load ``.env`` without overriding what the real environment already says."""
    if path.is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def _raw(name: str, default, *, secret: bool = False):
    value = os.environ.get(name)
    if value is None and secret:
        file_name = os.environ.get(f"{name}_FILE")
        if file_name:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"{name}_FILE={file_name!r}: cannot read the file ({exc.strerror})."
                ) from None
    if value is None:
        if default is _UNSET:
            raise ImproperlyConfigured(f"{name} is not set.")
        return default
    return value


def env_str(name: str, default=_UNSET, *, secret: bool = False) -> str:
    return _raw(name, default, secret=secret)


def env_choice(name: str, choices: tuple[str, ...], default=_UNSET) -> str:
    value = _raw(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
    return value


def env_int(name: str, default=_UNSET, *, min_value: int | None = None) -> int | None:
    """A whole number; None only when the variable is unset and the default is None."""
    value = _raw(name, default)
    if value is None:
        return None
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name}={number} must be at least {min_value}.")
    return number


def env_float(name: str, default=_UNSET, *, min_value: float | None = None) -> float:
    """A number of seconds, milliseconds ... (not for money: see env_decimal)."""
    value = _raw(name, default)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number.")
    if min_value is not None and number < min_value:
        raise ImproperlyConfigured(f"{name}={number} must be at least {min_value}.")
    return number


def env_decimal(name: str, default=_UNSET, *, min_value=None, max_value=None) -> Decimal:
    """An exact decimal (rates, amounts of money)."""
    value = _raw(name, default)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={value!r} is not a decimal number.") from None
    if not number.is_finite():
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number.")
    if min_value is not None and number < Decimal(min_value):
        raise ImproperlyConfigured(f"{name}={number} must be at least {min_value}.")
    if max_value is not None and number > Decimal(max_value):
        raise ImproperlyConfigured(f"{name}={number} must be at most {max_value}.")
    return number


def env_bool(name: str, default=_UNSET) -> bool:
    value = _raw(name, default)
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)."
    )


def env_size(name: str, default=_UNSET) -> int:
    """A size in bytes from '150MB', '128mb', '4MB', '1024', '2GB'."""
    value = _raw(name, default)
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a size (examples: 150MB, 4MB, 1GB, 1024)."
        )
    unit = match.group(2).upper()
    if unit and not unit.endswith("B"):
        unit += "B"
    return int(match.group(1)) * _SIZE_UNITS[unit]


def env_list(name: str, default=_UNSET) -> list[str]:
    value = _raw(name, default)
    if isinstance(value, list):
        return value
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(
    name: str, default=_UNSET, *, schemes: tuple[str, ...], secret: bool = True
) -> str | None:
    """A URL whose scheme is one of ``schemes``. Its password never appears in an error."""
    value = _raw(name, default, secret=secret)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ImproperlyConfigured(f"{name} is not a valid URL ({mask_url(value)}).") from None
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name} must start with one of {', '.join(s + '://' for s in schemes)}"
            f" (got {mask_url(value)})."
        )
    if not parts.hostname and not parts.path.strip("/") and "host=" not in parts.query:
        raise ImproperlyConfigured(f"{name} names no host ({mask_url(value)}).")
    redis_db = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss") and redis_db and not redis_db.isdigit():
        raise ImproperlyConfigured(
            f"{name}: the Redis database must be a number, as in redis://host:6379/0"
            f" (got {mask_url(value)})."
        )
    return value


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server with another database number (redis://.../N or unix://...?db=N)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return parts._replace(query=(query + "&" if query else "") + f"db={db}").geturl()
    return parts._replace(path=f"/{db}").geturl()
