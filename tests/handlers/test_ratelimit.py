from __future__ import annotations

import pytest

from cis.clock import FakeClock
from cis.handlers.errors import RateLimited
from cis.handlers.ratelimit import RateLimit, RateLimiter, RateLimits


def test_burst_then_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RateLimit(per_second=10, burst=3))
    for _ in range(3):
        limiter.acquire("u")
    with pytest.raises(RateLimited) as info:
        limiter.acquire("u")
    assert info.value.status == 429
    assert info.value.to_json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert 1 <= info.value.retry_after_ms <= 101
    clock.advance(0.1)
    limiter.acquire("u")
    with pytest.raises(RateLimited):
        limiter.acquire("u")


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RateLimit(per_second=1, burst=1))
    limiter.acquire("a")
    limiter.acquire("b")
    with pytest.raises(RateLimited):
        limiter.acquire("a")


def test_refill_never_exceeds_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RateLimit(per_second=100, burst=2))
    limiter.acquire("u")
    clock.advance(3600)
    limiter.acquire("u")
    limiter.acquire("u")
    with pytest.raises(RateLimited):
        limiter.acquire("u")


def test_failed_logins_check_and_charge() -> None:
    """5 failures a minute per account: successes are free, failures are charged."""
    clock = FakeClock()
    limits = RateLimits()
    limiter = RateLimiter(clock, limits.failed_logins_per_account)
    for _ in range(50):
        limiter.check("@a:x")  # a successful login only checks
    for _ in range(5):
        limiter.check("@a:x")
        limiter.charge("@a:x")
    with pytest.raises(RateLimited) as info:
        limiter.check("@a:x")
    assert 11_000 <= info.value.retry_after_ms <= 12_001
    clock.advance(12)
    limiter.check("@a:x")


def test_default_limits_are_the_stated_ones() -> None:
    limits = RateLimits()
    assert limits.messages_per_user == RateLimit(100.0, 1000)
    assert limits.failed_logins_per_account.per_second * 60 == pytest.approx(5)
    assert limits.failed_logins_per_ip.per_second * 60 == pytest.approx(5)
    assert limits.failed_logins_per_ip.burst == 5
    assert limits.registrations_per_ip.per_second < 1


def test_message_limit_allows_a_benchmark_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RateLimits().messages_per_user)
    for _ in range(1000):
        limiter.acquire("@a:x")
    with pytest.raises(RateLimited):
        limiter.acquire("@a:x")
    clock.advance(1.0)
    for _ in range(100):
        limiter.acquire("@a:x")


def test_table_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, RateLimit(per_second=1, burst=2), max_keys=100)
    for i in range(1000):
        limiter.acquire(f"k{i}")
    assert len(limiter) <= 100
    # Keys whose bucket refilled are dropped first.
    clock.advance(10)
    for i in range(50):
        limiter.acquire(f"new{i}")
    assert len(limiter) <= 100


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimit(0, 1)
    with pytest.raises(ValueError):
        RateLimit(1, 0)
