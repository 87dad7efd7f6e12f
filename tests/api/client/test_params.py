from __future__ import annotations

import pytest

from cis.api.client.params import get_bool, get_int, get_limit, get_str, require_str
from cis.handlers.errors import ApiError


def test_strings() -> None:
    q = {"a": ["1", "2"], "e": [""]}
    assert get_str(q, "a") == "1"
    assert get_str(q, "b") is None
    assert require_str(q, "e") == ""
    with pytest.raises(ApiError) as info:
        require_str(q, "b")
    assert info.value.errcode == "M_MISSING_PARAM"


def test_ints_and_limits() -> None:
    assert get_int({}, "t", default=7) == 7
    assert get_int({"t": ["30000"]}, "t", default=0, maximum=60000) == 30000
    assert get_int({"t": ["999999"]}, "t", default=0, maximum=60000) == 60000
    assert get_limit({"limit": ["5000"]}, default=10, maximum=1000) == 1000
    assert get_limit({}, default=10, maximum=1000) == 10
    for bad in ("x", "1.5", "-1", "0x10", "9" * 40, "١٢"):
        with pytest.raises(ApiError) as info:
            get_limit({"limit": [bad]}, default=10, maximum=100)
        assert info.value.errcode == "M_INVALID_PARAM"
        assert bad not in info.value.message
    with pytest.raises(ApiError):
        get_limit({"limit": ["0"]}, default=10, maximum=100)


def test_bools() -> None:
    assert get_bool({"f": ["true"]}, "f", default=False) is True
    assert get_bool({"f": ["false"]}, "f", default=True) is False
    assert get_bool({}, "f", default=True) is True
    with pytest.raises(ApiError):
        get_bool({"f": ["yes"]}, "f", default=False)
