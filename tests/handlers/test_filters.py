from __future__ import annotations

from typing import Any

import pytest

from cis.handlers.errors import ApiError
from cis.handlers.filters import (
    DEFAULT_FILTER,
    MAX_FILTER_LIMIT,
    EventFilter,
    parse_filter,
    parse_room_event_filter,
    project_fields,
    split_field_path,
)


def ev(type_: str, sender: str = "@a:x", **content: Any) -> dict[str, Any]:
    return {"type": type_, "sender": sender, "content": content, "room_id": "!r:x"}


def test_empty_filter_is_the_default() -> None:
    assert parse_filter({}) == DEFAULT_FILTER
    assert DEFAULT_FILTER.room.timeline.allows_every_event


def test_types_with_wildcards() -> None:
    f = parse_room_event_filter({"types": ["m.room.*", "m.reaction"]})
    assert f.allows("m.room.message", "@a:x")
    assert f.allows("m.room.", "@a:x")
    assert f.allows("m.reaction", "@a:x")
    assert not f.allows("m.reactions", "@a:x")
    assert not f.allows("org.m.room.message", "@a:x")


def test_wildcard_is_the_only_special_character() -> None:
    f = EventFilter(types=("m.?oom", "[ab]"))
    assert f.allows("m.?oom", "@a:x")
    assert not f.allows("m.room", "@a:x")
    assert f.allows("[ab]", "@a:x")
    assert not f.allows("a", "@a:x")


def test_not_lists_win() -> None:
    f = parse_room_event_filter(
        {"types": ["m.*"], "not_types": ["m.room.member"], "not_senders": ["@b:x"]}
    )
    assert f.allows("m.room.message", "@a:x")
    assert not f.allows("m.room.member", "@a:x")
    assert not f.allows("m.room.message", "@b:x")


def test_empty_positive_list_includes_nothing() -> None:
    f = parse_room_event_filter({"types": []})
    assert not f.allows("m.room.message", "@a:x")
    g = parse_room_event_filter({"senders": []})
    assert not g.allows("m.room.message", "@a:x")


def test_senders_and_rooms() -> None:
    f = parse_room_event_filter({"senders": ["@a:x"], "rooms": ["!r:x"], "not_rooms": ["!s:x"]})
    assert f.allows("t", "@a:x") and not f.allows("t", "@c:x")
    assert f.allows_room("!r:x") and not f.allows_room("!s:x") and not f.allows_room("!t:x")


def test_contains_url() -> None:
    with_url = parse_room_event_filter({"contains_url": True})
    without_url = parse_room_event_filter({"contains_url": False})
    image = ev("m.room.message", url="mxc://x/y")
    text = ev("m.room.message", body="hi")
    assert with_url.filter_events([image, text]) == [image]
    assert without_url.filter_events([image, text]) == [text]


def test_limit_is_validated_and_capped() -> None:
    assert parse_room_event_filter({"limit": 5}).limit == 5
    assert parse_room_event_filter({"limit": 10**9}).limit == MAX_FILTER_LIMIT
    for bad in (0, -1, 1.5, "5", True, None):
        with pytest.raises(ApiError) as info:
            parse_room_event_filter({"limit": bad})
        assert info.value.errcode == "M_BAD_JSON"
        assert info.value.status == 400


@pytest.mark.parametrize(
    "definition",
    [
        [],
        "x",
        {"event_format": "xml"},
        {"event_fields": "content"},
        {"event_fields": [1]},
        {"room": []},
        {"room": {"timeline": {"types": "m.room.message"}}},
        {"room": {"timeline": {"types": [None]}}},
        {"room": {"rooms": ["#alias:x"]}},
        {"room": {"include_leave": "yes"}},
        {"room": {"state": {"lazy_load_members": 1}}},
        {"presence": {"senders": ["notauser"]}},
        {"account_data": {"not_types": [["x"]]}},
        {"room": {"timeline": {"types": ["x" * 2000]}}},
        {"room": {"timeline": {"types": ["x"] * 1001}}},
    ],
)
def test_malformed_filters_are_bad_json(definition: object) -> None:
    with pytest.raises(ApiError) as info:
        parse_filter(definition)
    assert info.value.errcode == "M_BAD_JSON"
    # The message names the field, never the value sent.
    assert "xml" not in info.value.message and "#alias" not in info.value.message


def test_full_filter_parses() -> None:
    f = parse_filter(
        {
            "event_fields": ["type", "content.body", "content.m\\.relates_to"],
            "event_format": "client",
            "presence": {"types": []},
            "account_data": {"types": ["m.push_rules"]},
            "room": {
                "rooms": ["!r:x"],
                "include_leave": True,
                "state": {"lazy_load_members": True, "types": ["m.room.*"]},
                "timeline": {"limit": 20, "not_types": ["m.room.member"]},
                "ephemeral": {"types": ["m.receipt"]},
                "account_data": {"types": []},
            },
        }
    )
    assert f.room.include_leave and f.room.allows_room("!r:x") and not f.room.allows_room("!z:x")
    assert f.room.timeline.limit == 20
    assert f.room.state.lazy_load_members
    assert not f.presence.allows("m.presence", "@a:x")
    assert f.account_data.allows("m.push_rules", "@a:x")
    assert f.event_fields == (("type",), ("content", "body"), ("content", "m.relates_to"))


def test_field_paths_and_projection() -> None:
    assert split_field_path("content.body") == ("content", "body")
    assert split_field_path("content.m\\.relates_to.rel_type") == (
        "content",
        "m.relates_to",
        "rel_type",
    )
    assert split_field_path("a\\\\.b") == ("a\\", "b")
    event = {
        "type": "m.room.message",
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "x"}},
        "sender": "@a:x",
    }
    out = project_fields(
        event, [("type",), ("content", "body"), ("content", "m.relates_to"), ("missing",)]
    )
    assert out == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}},
    }
    f = parse_filter({"event_fields": ["sender"]})
    assert f.project(event) == {"sender": "@a:x"}
    assert DEFAULT_FILTER.project(event) is event


def test_filters_are_frozen_and_hashable() -> None:
    f = parse_filter({"room": {"timeline": {"types": ["a"]}}})
    with pytest.raises(AttributeError):
        f.event_format = "federation"  # type: ignore[misc]
    assert f == parse_filter({"room": {"timeline": {"types": ["a"]}}})
