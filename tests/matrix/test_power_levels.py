"""``effective_power_levels``: parsed once per frozen power levels event, never stale."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cis.matrix.events import freeze
from cis.matrix.power_levels import PARSED_CACHE_SIZE, _parsed_cache, effective_power_levels
from cis.matrix.room_versions import get_room_version

RV = get_room_version("10")


@dataclass
class FakeEvent:
    event_id: str
    content: Any
    room_id: str = "!r:a"
    sender: str = "@a:a"
    type: str = "m.room.power_levels"
    state_key: str | None = ""


def test_a_frozen_event_is_parsed_once() -> None:
    event = FakeEvent("$pl1", freeze({"users": {"@a:a": 100}, "ban": 70}))
    first = effective_power_levels(RV, None, event)
    assert first.user_level("@a:a") == 100 and first.ban == 70
    assert effective_power_levels(RV, None, event) is first


def test_the_same_id_with_other_content_is_parsed_afresh() -> None:
    one = FakeEvent("$same", freeze({"users": {"@a:a": 100}}))
    other = FakeEvent("$same", freeze({"users": {"@a:a": 10}}))
    assert effective_power_levels(RV, None, one).user_level("@a:a") == 100
    assert effective_power_levels(RV, None, other).user_level("@a:a") == 10
    assert effective_power_levels(RV, None, one).user_level("@a:a") == 100


def test_mutable_content_is_never_cached() -> None:
    content: dict[str, Any] = {"users": {"@a:a": 100}}
    event = FakeEvent("$mutable", content)
    assert effective_power_levels(RV, None, event).user_level("@a:a") == 100
    content["users"] = {"@a:a": 5}
    assert effective_power_levels(RV, None, event).user_level("@a:a") == 5
    proxy_over_dict = FakeEvent("$proxy", MappingProxyType({"users": {"@a:a": 1}}))
    assert effective_power_levels(RV, None, proxy_over_dict).user_level("@a:a") == 1


def test_the_cache_stays_bounded() -> None:
    for number in range(PARSED_CACHE_SIZE + 50):
        event = FakeEvent(f"$bound{number}", freeze({"users": {"@a:a": number}}))
        assert effective_power_levels(RV, None, event).user_level("@a:a") == number
    assert len(_parsed_cache) <= PARSED_CACHE_SIZE
