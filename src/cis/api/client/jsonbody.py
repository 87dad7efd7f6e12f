"""Request bodies: size caps and JSON parsing with a nesting-depth cap.

- A body is at most ``MAX_BODY_BYTES`` (1 MiB) unless a route says otherwise (media uploads);
  the HTTP layer refuses it from ``Content-Length`` before reading and again while streaming,
  since a client may lie or send chunks (``M_TOO_LARGE``, 413).
- The body must be UTF-8 JSON (``M_NOT_JSON``); ``NaN`` and ``Infinity`` are not JSON.
- The top level must be an object, nesting at most ``MAX_JSON_DEPTH`` deep, and strings and
  keys may not hold lone surrogates, which no canonical JSON encoder can write back out
  (``M_BAD_JSON``). Python's parser bounds its own recursion; the walk below is iterative.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from cis.handlers.errors import ApiError, Errcode

MAX_BODY_BYTES: Final = 1024 * 1024
MAX_JSON_DEPTH: Final = 64

JsonObject = dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ValueError("non-finite number")
    return value


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json_value(value: object, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``M_BAD_JSON`` if ``value`` nests deeper than ``max_depth`` or holds bad text."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                raise ApiError(Errcode.BAD_JSON, "Strings must be valid Unicode")
        elif isinstance(item, dict):
            if depth > max_depth:
                raise ApiError(Errcode.BAD_JSON, "JSON nests too deeply")
            for key, child in item.items():
                if _has_lone_surrogate(key):
                    raise ApiError(Errcode.BAD_JSON, "Strings must be valid Unicode")
                if isinstance(child, str | dict | list):
                    stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise ApiError(Errcode.BAD_JSON, "JSON nests too deeply")
            stack.extend(
                (child, depth + 1) for child in item if isinstance(child, str | dict | list)
            )


def parse_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Parse ``body`` as JSON of any shape, with the checks above."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(Errcode.NOT_JSON, "Content is not JSON") from None
    check_json_value(value, max_depth=max_depth)
    return value


def parse_json_object(
    body: bytes, *, allow_empty: bool = False, max_depth: int = MAX_JSON_DEPTH
) -> JsonObject:
    """Parse ``body`` as a JSON object; an empty body is ``{}`` when ``allow_empty``.

    matrix-nio sends ``Content-Type: application/json`` with no body on ``/join`` and
    ``/logout``, so those routes allow an empty body.
    """
    if not body.strip():
        if allow_empty:
            return {}
        raise ApiError(Errcode.NOT_JSON, "Content is not JSON")
    value = parse_json(body, max_depth=max_depth)
    if not isinstance(value, dict):
        raise ApiError(Errcode.BAD_JSON, "Content must be a JSON object")
    return value


def parse_query_json(text: str, name: str) -> object:
    """JSON passed in a query parameter (``filter={...}``): ``M_INVALID_PARAM`` if it is not
    JSON, the same depth and text checks as bodies otherwise."""
    try:
        return parse_json(text.encode("utf-8"))
    except ApiError as exc:
        if exc.errcode == Errcode.NOT_JSON:
            raise ApiError(Errcode.INVALID_PARAM, f"Parameter {name} is not valid JSON") from None
        raise
