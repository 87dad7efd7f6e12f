"""The linearizability checker on hand-written histories (it must say no where no is due)."""

from __future__ import annotations

import pytest

from tests.e2e.raftdb.checker import Op, Verdict, check


def w(client: int, value: int, call: float, ret: float | None, key: str = "x") -> Op:
    return Op(client, key, "write", value, None, call, ret)


def r(client: int, seen: int | None, call: float, ret: float | None, key: str = "x") -> Op:
    return Op(client, key, "read", None, seen, call, ret)


def cas(
    client: int, expected: int, new: int, ok: bool | None, call: float, ret: float | None
) -> Op:
    return Op(client, "x", "cas", (expected, new), ok, call, ret)


NOT_LINEARIZABLE = {
    "stale read after a completed write": [w(1, 1, 0, 10), r(2, None, 20, 30)],
    "read of a value never written": [w(1, 1, 0, 10), r(2, 7, 20, 30)],
    "read goes back to an overwritten value": [
        w(1, 1, 0, 10),
        w(1, 2, 20, 30),
        r(2, 1, 40, 50),
    ],
    "read sees a write that had not started": [r(2, 1, 0, 10), w(1, 1, 20, 30)],
    "two successful CAS from the same value": [
        w(1, 1, 0, 10),
        cas(2, 1, 2, True, 20, 30),
        cas(3, 1, 3, True, 40, 50),
    ],
    "failed CAS although the value matched": [w(1, 5, 0, 10), cas(2, 5, 6, False, 20, 30)],
    "value flips back after being observed": [
        w(1, 5, 0, None),  # outcome unknown
        r(2, 5, 10, 20),
        r(3, None, 30, 40),
    ],
    "concurrent reads disagree on order": [
        w(1, 1, 0, 100),
        w(2, 2, 0, 100),
        r(3, 1, 10, 20),
        r(3, 2, 30, 40),
        r(4, 2, 10, 20),
        r(4, 1, 30, 40),
    ],
}

LINEARIZABLE = {
    "read overlapping a write may see either": [
        w(1, 1, 0, 10),
        w(1, 2, 20, 40),
        r(2, 1, 25, 35),
        r(3, 2, 25, 35),
    ],
    "unknown write that never shows": [w(1, 9, 0, None), r(2, None, 10, 20)],
    "unknown write that shows later": [w(1, 9, 0, None), r(2, None, 10, 20), r(2, 9, 30, 40)],
    "failed CAS on another value": [w(1, 5, 0, 10), cas(2, 7, 8, False, 20, 30)],
    "CAS chain": [
        w(1, 1, 0, 10),
        cas(2, 1, 2, True, 20, 30),
        cas(3, 1, 3, False, 40, 50),
        r(4, 2, 60, 70),
    ],
    "unknown CAS that took effect": [
        w(1, 1, 0, 10),
        cas(2, 1, 2, None, 20, None),
        r(3, 2, 40, 50),
    ],
    "keys are independent": [
        w(1, 1, 0, 10, key="a"),
        w(1, 2, 0, 10, key="b"),
        r(2, 1, 20, 30, key="a"),
        r(2, 2, 20, 30, key="b"),
    ],
}


@pytest.mark.parametrize("name", sorted(NOT_LINEARIZABLE))
def test_rejects_non_linearizable_history(name: str) -> None:
    result = check(NOT_LINEARIZABLE[name])
    assert result.verdict is Verdict.NOT_LINEARIZABLE, result
    assert result.key == "x"


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_accepts_linearizable_history(name: str) -> None:
    result = check(LINEARIZABLE[name])
    assert result.verdict is Verdict.LINEARIZABLE, result


def test_one_bad_key_fails_the_history_and_is_named() -> None:
    history = [w(1, 1, 0, 10, key="good"), r(2, 1, 20, 30, key="good")]
    history += [w(1, 1, 0, 10, key="bad"), r(2, None, 20, 30, key="bad")]
    result = check(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.key == "bad"
    assert result.per_key["good"] is Verdict.LINEARIZABLE


def test_a_long_concurrent_history_is_checked_quickly() -> None:
    # 8 clients, 300 operations each, overlapping in pairs; a correct register.
    history: list[Op] = []
    value = None
    t = 0.0
    for i in range(300):
        for c in range(8):
            if (i + c) % 3 == 0:
                value = i * 10 + c
                history.append(w(c, value, t, t + 5))
            else:
                history.append(r(c, value, t + 6, t + 8))
            t += 10
    result = check(history, time_limit_s=20)
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.ops_checked == 2400


def test_an_oversized_history_is_unknown_not_guessed() -> None:
    history = [w(1, i, i * 10, i * 10 + 5) for i in range(6000)]
    assert check(history).verdict is Verdict.UNKNOWN
