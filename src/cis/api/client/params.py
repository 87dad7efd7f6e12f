"""Query-string parameters: parsed strictly, with caps, into plain values.

A malformed value is ``M_INVALID_PARAM`` (400); a required one that is absent is
``M_MISSING_PARAM``. Errors name the parameter, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from cis.handlers.errors import ApiError, Errcode

Query = Mapping[str, Sequence[str]]

MAX_INT_DIGITS: Final = 18


def get_str(query: Query, name: str) -> str | None:
    """The first value of ``name`` or ``None``."""
    values = query.get(name)
    return values[0] if values else None


def require_str(query: Query, name: str) -> str:
    value = get_str(query, name)
    if value is None:
        raise ApiError(Errcode.MISSING_PARAM, f"Missing parameter: {name}")
    return value


def get_int(
    query: Query, name: str, *, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer parameter; below ``minimum`` is refused, above ``maximum`` is capped."""
    raw = get_str(query, name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_INT_DIGITS:
        raise ApiError(Errcode.INVALID_PARAM, f"Parameter {name} must be an integer")
    value = int(text)
    if value < minimum:
        raise ApiError(Errcode.INVALID_PARAM, f"Parameter {name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        return maximum
    return value


def get_bool(query: Query, name: str, *, default: bool) -> bool:
    """``true``/``false`` (as the spec writes booleans in query strings)."""
    raw = get_str(query, name)
    if raw is None or raw == "":
        return default
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise ApiError(Errcode.INVALID_PARAM, f"Parameter {name} must be true or false")


def get_limit(query: Query, *, default: int, maximum: int, name: str = "limit") -> int:
    """A ``limit``: at least 1, capped at ``maximum`` so no request can ask for everything."""
    return get_int(query, name, default=default, minimum=1, maximum=maximum)
