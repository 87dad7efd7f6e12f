from __future__ import annotations

import pytest

from cis.clock import FakeClock, SystemClock


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=1000.0)
    assert clock.time() == 1000.0 and clock.monotonic() == 0.0
    clock.advance(2.5)
    assert clock.time_ms() == 1_002_500 and clock.monotonic() == 2.5
    clock.set_wall(10.0)
    assert clock.time() == 10.0 and clock.monotonic() == 2.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_system_clock_agrees_with_itself() -> None:
    clock = SystemClock()
    assert abs(clock.time() * 1000 - clock.time_ms()) < 1000
    a = clock.monotonic()
    assert clock.monotonic() >= a
