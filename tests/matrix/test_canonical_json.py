"""Canonical JSON (appendices, "Canonical JSON"): the spec's examples, an independent encoder
written here from the spec's grammar, and the values outside the domain."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cis.matrix import InvalidJson
from cis.matrix.canonical_json import MAX_DEPTH, MAX_SAFE_INTEGER, check_value, encode, loads

# ------------------------------------------------------------------ an independent encoder

# The grammar's `escaped` rule: the two-character escapes, then \u00XX in lower-case hex for
# the other ASCII control characters; every other code point is written as itself in UTF-8.
_SHORT_ESCAPES = {"\b": "b", "\t": "t", "\n": "n", "\f": "f", "\r": "r", '"': '"', "\\": "\\"}


def _spec_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append("\\" + _SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _spec_value(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)  # no leading zeros; Python has no -0 integer
    if isinstance(v, str):
        return _spec_string(v)
    if isinstance(v, list):
        return "[" + ",".join(_spec_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    keys = sorted(v, key=lambda k: [ord(c) for c in k])  # by Unicode code point
    return "{" + ",".join(_spec_string(k) + ":" + _spec_value(v[k]) for k in keys) + "}"


def spec_encode(v: Any) -> bytes:
    return _spec_value(v).encode("utf-8")


# ------------------------------------------------------------------ the domain, generated

matrix_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
matrix_scalars = (
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | matrix_text
)
matrix_values = st.recursive(
    matrix_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(matrix_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(matrix_values)
def test_encoding_equals_the_spec_grammar(value: Any) -> None:
    assert encode(value) == spec_encode(value)


@settings(max_examples=200)
@given(matrix_values)
def test_strict_parse_round_trips(value: Any) -> None:
    assert loads(encode(value)) == value


# The appendix's examples, input as JSON text and expected canonical output.
APPENDIX_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {
            "display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
]


@pytest.mark.parametrize(("given_json", "expected"), APPENDIX_EXAMPLES)
def test_appendix_examples(given_json: str, expected: str) -> None:
    value = loads(given_json)
    assert encode(value) == expected.encode("utf-8")
    assert spec_encode(value) == expected.encode("utf-8")


def test_appendix_negative_zero_and_exponent_example() -> None:
    # The appendix encodes {"a": -0, "b": 1e10} as {"a":0,"b":10000000000}. As Python values
    # those numbers are the integers 0 and 10**10; the text `1e10` itself is an exponent form,
    # which a v6+ room refuses on receipt (our strict parser reads it as a float).
    assert encode({"a": -0, "b": 10**10}) == b'{"a":0,"b":10000000000}'
    assert loads('{"a": -0}') == {"a": 0}
    with pytest.raises(InvalidJson):
        loads('{"a": -0, "b": 1e10}')


def test_integer_bounds_are_inclusive() -> None:
    assert encode([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == b"[9007199254740991,-9007199254740991]"


# ------------------------------------------------------------------ outside the domain

out_of_range_ints = st.integers(min_value=MAX_SAFE_INTEGER + 1) | st.integers(
    max_value=-MAX_SAFE_INTEGER - 1
)
lone_surrogate_text = st.builds(
    lambda a, s, b: a + s + b,
    matrix_text,
    st.characters(categories=("Cs",)),
    matrix_text,
)
bad_leaves = (
    st.floats(allow_nan=True, allow_infinity=True) | out_of_range_ints | lone_surrogate_text
)


def _embed(value: Any, path: list[int]) -> Any:
    """Put ``value`` somewhere inside a structure, by a generated path."""
    for step in path:
        value = [value] if step % 2 else {f"k{step}": value}
    return value


@settings(max_examples=200)
@given(bad_leaves, st.lists(st.integers(0, 5), max_size=4))
def test_values_outside_the_domain_are_refused(bad: Any, path: list[int]) -> None:
    with pytest.raises(InvalidJson):
        encode(_embed(bad, path))


@settings(max_examples=100)
@given(lone_surrogate_text, st.lists(st.integers(0, 5), max_size=3))
def test_lone_surrogate_keys_are_refused(key: str, path: list[int]) -> None:
    with pytest.raises(InvalidJson):
        check_value(_embed({key: 1}, path))


@pytest.mark.parametrize(
    "bad",
    [
        1.0,
        math.nan,
        -0.0,
        {1: "int key"},
        {None: "null key"},
        ("tuple",),
        {"set"},
        b"bytes",
        object(),
        2**53,
        -(2**53),
    ],
    ids=repr,
)
def test_python_values_outside_the_domain_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidJson):
        encode({"x": bad})


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[Infinity]",
        "-Infinity",
        "1.5",
        "1e10",
        "1E2",
        "[0.0]",
        '{"a": 1, "a": 2}',
        '"\\ud800"',
        '{"\\udfff": 1}',
        '"\\ud800x"',
        "9007199254740992",
        "-9007199254740992",
        "[1,]",
        "",
        b'"\xff"',
        b'"\xed\xa0\x80"',  # a surrogate encoded in (invalid) UTF-8
    ],
    ids=repr,
)
def test_strict_parser_refuses(text: str | bytes) -> None:
    with pytest.raises(InvalidJson):
        loads(text)


def test_a_paired_surrogate_escape_is_a_real_character() -> None:
    assert loads('"\\ud83d\\ude00"') == "😀"
    assert encode("😀") == '"😀"'.encode()


def test_nesting_is_bounded_without_a_recursion_error() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidJson):
        check_value(deep)
    with pytest.raises(InvalidJson):
        loads("[" * 5000 + "]" * 5000)
    ok: Any = 1
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert json.loads(encode(ok)) == ok
