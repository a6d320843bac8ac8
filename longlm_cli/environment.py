"""Numbers longlm reads from environment variables, parsed in one place. Cheap to import."""

from __future__ import annotations

import os


def bytes_from_env(name: str, default: int, *, minimum: int, error: type[Exception]) -> int:
    """A byte count from ``$name`` (whole number >= ``minimum``), else ``default``; ``error`` for a bad value."""
    return count_from_env(name, default, minimum=minimum, error=error, unit="byte")


def count_from_env(name: str, default: int, *, minimum: int, error: type[Exception], unit: str) -> int:
    """A count of ``unit``s from ``$name`` (whole number >= ``minimum``), else ``default``; ``error`` for a bad
    value."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise error(f"{name}={raw!r} is not a whole number of {unit}s") from None
    if value < minimum:
        need = "must not be negative" if minimum == 0 else f"must be at least {minimum} ({unit})"
        raise error(f"{name}={raw!r} {need}")
    return value
