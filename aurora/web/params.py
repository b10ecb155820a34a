"""Query parameters, checked the same way on every endpoint."""

from __future__ import annotations

from flask import request

from ..errors import AuroraError


class BadParameter(AuroraError):
    """Raised when a query parameter has a value Aurora cannot use."""

    code = "bad_parameter"


def int_arg(name: str, default: int, low: int, high: int, clamp: bool = False) -> int:
    """An integer query parameter within [low, high]: out of range is an error, or clamped."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name}: {raw[:20]!r} is not an integer") from None
    if clamp:
        return min(max(value, low), high)
    if not low <= value <= high:
        raise BadParameter(f"{name}: must be between {low} and {high}, got {value}")
    return value
