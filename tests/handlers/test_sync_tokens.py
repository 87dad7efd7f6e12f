from __future__ import annotations

import pytest

from cis.handlers.errors import ApiError
from cis.handlers.sync_tokens import (
    StreamToken,
    TopologicalToken,
    parse_pagination_token,
)


def test_round_trip() -> None:
    token = StreamToken(
        events=12, receipts=3, account_data=4, typing=1700, to_device=5, device_lists=6
    )
    text = token.serialize()
    assert text == "s12_3_4_1700_5_6"
    assert str(token) == text
    assert StreamToken.parse(text) == token
    assert StreamToken.parse("s0_0_0_0_0_0") == StreamToken()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "12_3_4_5_6_7",
        "s1_2_3_4_5",
        "s1_2_3_4_5_6_7",
        "s1_2_3_4_5_-6",
        "s1_2_3_4_5_x",
        "s1_2_3_4_5_６",
        "s" + "9" * 30 + "_0_0_0_0_0",
        "s1__3_4_5_6",
        "t1_2",
    ],
)
def test_malformed_tokens_are_invalid_param(text: str) -> None:
    with pytest.raises(ApiError) as info:
        StreamToken.parse(text)
    assert info.value.errcode == "M_INVALID_PARAM"
    assert info.value.status == 400


def test_future_positions_are_clamped_per_stream() -> None:
    current = StreamToken(10, 10, 10, 10, 10, 10)
    future = StreamToken(99, 5, 10, 11, 0, 12)
    assert future.clamp(current) == StreamToken(10, 5, 10, 10, 0, 10)
    assert current.clamp(current) == current


def test_is_before() -> None:
    a = StreamToken(1, 1, 1, 1, 1, 1)
    assert a.is_before(StreamToken(1, 1, 1, 1, 1, 2))
    assert not a.is_before(a)
    assert a.is_before(StreamToken(0, 5, 0, 0, 0, 0))  # receipts moved on
    assert not a.is_before(StreamToken(0, 0, 0, 0, 0, 0))


def test_pagination_tokens() -> None:
    assert parse_pagination_token("t5_17") == TopologicalToken(5, 17)
    assert str(TopologicalToken(5, 17)) == "t5_17"
    assert parse_pagination_token("s1_2_3_4_5_6") == StreamToken(1, 2, 3, 4, 5, 6)
    assert TopologicalToken(1, 9) < TopologicalToken(2, 0) < TopologicalToken(2, 1)
    for bad in ("t", "t1", "t1_2_3", "tx_1", "x1_2"):
        with pytest.raises(ApiError):
            parse_pagination_token(bad)
