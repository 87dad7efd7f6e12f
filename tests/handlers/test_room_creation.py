from __future__ import annotations

from typing import Any

import pytest

from cis.handlers.errors import ApiError
from cis.handlers.room_creation import parse_create_room, plan_room
from cis.ids import ServerName, UserId

SERVER = ServerName("n.cis.local")
ALICE = UserId("@alice:n.cis.local")
BOB = UserId("@bob:n.cis.local")


def keys(body: dict[str, Any]) -> list[tuple[str, str]]:
    plan = plan_room(parse_create_room(body), ALICE, SERVER)
    return [(e.type, e.state_key) for e in plan.events]


def test_matrix_nio_default_request() -> None:
    req = parse_create_room(
        {"visibility": "private", "creation_content": {"m.federate": True}, "is_direct": False}
    )
    assert req.preset == "private_chat" and req.room_version == "11"
    plan = plan_room(req, ALICE, SERVER)
    assert [(e.type, e.state_key) for e in plan.events] == [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
    ]
    create = plan.events[0].content
    assert create == {"m.federate": True, "room_version": "11"}  # v11: no creator key
    assert plan.events[3].content == {"join_rule": "invite"}
    assert plan.events[5].content == {"guest_access": "can_join"}


def test_full_order_of_the_spec() -> None:
    body = {
        "preset": "public_chat",
        "room_alias_name": "pub",
        "name": "The Pub",
        "topic": "Happy hour",
        "initial_state": [
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.name", "content": {"name": "overridden"}},
        ],
        "invite": [BOB],
        "is_direct": True,
        "room_version": "10",
    }
    plan = plan_room(parse_create_room(body), ALICE, SERVER)
    assert [(e.type, e.state_key) for e in plan.events] == [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.canonical_alias", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.encryption", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", BOB),
    ]
    by_type = {e.type: e.content for e in plan.events}
    assert by_type["m.room.create"]["creator"] == ALICE  # v10 keeps creator
    assert by_type["m.room.canonical_alias"] == {"alias": "#pub:n.cis.local"}
    assert plan.alias == "#pub:n.cis.local"
    assert by_type["m.room.join_rules"] == {"join_rule": "public"}
    assert by_type["m.room.guest_access"] == {"guest_access": "forbidden"}
    assert by_type["m.room.name"] == {"name": "The Pub"}
    assert by_type["m.room.topic"]["topic"] == "Happy hour"
    assert plan.events[-1].content == {"membership": "invite", "is_direct": True}


def test_initial_state_beats_the_preset() -> None:
    order = keys(
        {
            "preset": "private_chat",
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
            ],
        }
    )
    assert order.count(("m.room.history_visibility", "")) == 1
    assert order[-1] == ("m.room.history_visibility", "")


def test_power_levels_defaults_and_override() -> None:
    plan = plan_room(
        parse_create_room(
            {
                "preset": "trusted_private_chat",
                "invite": [BOB],
                "power_level_content_override": {"events_default": 10, "users": {ALICE: 100}},
            }
        ),
        ALICE,
        SERVER,
    )
    power = plan.events[2].content
    assert power["events_default"] == 10
    assert power["users"] == {ALICE: 100}  # the override replaces the key as a whole
    default = (
        plan_room(
            parse_create_room({"preset": "trusted_private_chat", "invite": [BOB]}), ALICE, SERVER
        )
        .events[2]
        .content
    )
    assert default["users"] == {ALICE: 100, BOB: 100}
    assert default["state_default"] == 50 and default["invite"] == 0
    public = plan_room(parse_create_room({"preset": "public_chat"}), ALICE, SERVER)
    assert public.events[2].content["invite"] == 50


def test_creation_content_cannot_set_the_creator() -> None:
    plan = plan_room(
        parse_create_room({"creation_content": {"creator": BOB, "room_version": "1"}}),
        ALICE,
        SERVER,
    )
    assert plan.events[0].content == {"room_version": "11"}


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"room_version": "9"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": "12"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": 11}, "M_BAD_JSON"),
        ({"preset": "secret"}, "M_BAD_JSON"),
        ({"visibility": "hidden"}, "M_BAD_JSON"),
        ({"creation_content": []}, "M_BAD_JSON"),
        ({"initial_state": {}}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.topic"}]}, "M_BAD_JSON"),
        ({"initial_state": [{"content": {}}]}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.create", "content": {}}]}, "M_INVALID_PARAM"),
        ({"initial_state": [{"type": "x", "state_key": 1, "content": {}}]}, "M_BAD_JSON"),
        ({"invite": "@bob:x"}, "M_BAD_JSON"),
        ({"invite": ["bob"]}, "M_INVALID_PARAM"),
        ({"room_alias_name": "a:b"}, "M_INVALID_PARAM"),
        ({"name": 5}, "M_BAD_JSON"),
        ({"is_direct": "yes"}, "M_BAD_JSON"),
        ({"power_level_content_override": 5}, "M_BAD_JSON"),
        ({"invite_3pid": [{"medium": "email"}]}, "M_FORBIDDEN"),
    ],
)
def test_bad_requests(body: dict[str, Any], errcode: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_create_room(body)
    assert info.value.errcode == errcode
