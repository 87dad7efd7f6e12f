"""Canonical JSON, and the strict value domain room versions 6 and later require.

The Matrix appendix ("Canonical JSON") defines the encoding: the shortest UTF-8 JSON, object
keys sorted by code point, numbers only integers in ``[-(2**53)+1, (2**53)-1]`` written without
exponent, fraction or ``-0``. ``canonicaljson.encode_canonical_json`` produces those bytes, but it
does not police the domain: it writes floats, and a lone surrogate surfaces as a
``UnicodeEncodeError`` from deep inside. Room versions ≥ 6 require servers to refuse such JSON
(``rooms/fragments/v6-canonical-json``), so everything here checks first.

The domain, as Python values: ``dict`` with ``str`` keys, ``list``, ``str`` without lone
surrogates, ``int`` within ±(2^53−1) (``bool`` is its own JSON type), and ``None``. Nesting is
limited to ``MAX_DEPTH`` levels: Python's JSON codecs stop near 1,000 anyway, so any Python
server refuses deeper values; the limit makes that an ``InvalidJson`` rather than a
``RecursionError``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

from canonicaljson import encode_canonical_json

from cis.matrix.errors import InvalidJson

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""The largest integer canonical JSON carries; the smallest is its negation."""

MAX_DEPTH: Final = 512
"""How deeply arrays and objects may nest."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _path_text(path: tuple[str | int, ...]) -> str:
    if not path:
        return "the value"
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _refuse(path: tuple[str | int, ...], why: str) -> NoReturn:
    raise InvalidJson(f"{_path_text(path)}: {why}")


def _check_str(s: str, path: tuple[str | int, ...], what: str) -> None:
    # A str can only hold a lone surrogate outside ASCII; isascii() is the fast path.
    if not s.isascii() and _SURROGATE.search(s):
        _refuse(path, f"{what} holds a lone surrogate, which UTF-8 cannot encode")


def check_value(value: object) -> None:
    """Raise ``InvalidJson`` unless ``value`` lies in canonical JSON's domain (see module doc).

    Walks the value iteratively, so a deep value fails cleanly instead of overflowing the stack.
    """
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if item is None or item is True or item is False:
            continue
        if isinstance(item, str):
            _check_str(item, path, "string")
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                _refuse(path, "integer outside ±(2^53−1)")
        elif isinstance(item, float):
            _refuse(path, "floats are not allowed in canonical JSON")
        elif isinstance(item, dict):
            if len(path) >= MAX_DEPTH:
                _refuse(path, f"nested deeper than {MAX_DEPTH} levels")
            for key, sub in item.items():
                if not isinstance(key, str):
                    _refuse(path, f"object key {key!r} is not a string")
                _check_str(key, path, "object key")
                stack.append((sub, (*path, key)))
        elif isinstance(item, list):
            if len(path) >= MAX_DEPTH:
                _refuse(path, f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((sub, (*path, i)) for i, sub in enumerate(item))
        else:
            _refuse(path, f"{type(item).__name__} is not a JSON type")


def encode(value: object) -> bytes:
    """The canonical JSON bytes of ``value``; ``InvalidJson`` if it is outside the domain."""
    check_value(value)
    return encode_canonical_json(value)


def _no_constant(name: str) -> NoReturn:
    raise InvalidJson(f"{name} is not JSON")


def _no_float(text: str) -> NoReturn:
    raise InvalidJson(f"number {text[:40]} has a fraction or exponent; only integers are allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJson(f"object key {key[:40]!r} appears twice")
            seen.add(key)
    return obj


def loads(data: bytes | str) -> Any:
    """Parse JSON text into a value of the domain, refusing what canonical JSON cannot carry.

    Refused: invalid UTF-8, ``NaN``/``Infinity``, fractions and exponents (``1e10`` too: the
    encoding forbids exponents, and Python would read it as a float), duplicate keys, integers
    outside ±(2^53−1), lone surrogates (``"\\ud800"``), nesting deeper than ``MAX_DEPTH``.
    Whitespace and key order are accepted: this checks the value, not the text's form.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_no_float,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError as e:
        raise InvalidJson(f"not UTF-8: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise InvalidJson(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InvalidJson(f"nested deeper than {MAX_DEPTH} levels") from None
    check_value(value)
    return value
