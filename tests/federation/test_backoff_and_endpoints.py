from __future__ import annotations

import random

import pytest

from cis.federation.backoff import Backoff
from cis.federation.config import TunnelConfig
from cis.federation.endpoints import InvalidEndpoint, check_endpoints, parse_endpoint


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=60, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(60.0, 0.5 * 2**n) for n in range(12)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    assert max(delays) <= 60 and delays[-1] >= 30
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_jitter_spreads_peers_apart() -> None:
    firsts = {round(Backoff(rng=random.Random(seed)).next_delay(), 6) for seed in range(20)}
    assert len(firsts) == 20


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


def test_config_refuses_a_silence_shorter_than_the_ping() -> None:
    with pytest.raises(ValueError):
        TunnelConfig(ping_interval=5, silence_timeout=5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:8484", "ws://127.0.0.1:8484/_cis/federation/v1"),
        ("ws://Node.Example:80/", "ws://node.example:80/"),
        ("wss://[::1]:443/custom/path", "wss://[::1]:443/custom/path"),
    ],
)
def test_endpoints_are_normalised(given: str, expected: str) -> None:
    assert parse_endpoint(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "http://127.0.0.1:8484/",
        "ws://127.0.0.1/",
        "ws://127.0.0.1:99999/",
        "ws://user:pw@host:1/",
        "ws://host:1/?q=1",
        "ws://" + "a" * 300 + ":1/",
        "not a url",
    ],
)
def test_bad_endpoints_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEndpoint):
        parse_endpoint(bad)


def test_advertised_lists_are_bounded_and_normal() -> None:
    good = "ws://h:1/_cis/federation/v1"
    assert check_endpoints([good] * 8) == (good,) * 8
    with pytest.raises(InvalidEndpoint):
        check_endpoints([good] * 9)
    with pytest.raises(InvalidEndpoint):
        check_endpoints(["ws://h:1"])  # not in normal form
