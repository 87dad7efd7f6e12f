from __future__ import annotations

from cis.handlers.capabilities import capabilities
from cis.handlers.push_rules import push_rules_response
from cis.ids import UserId


def test_default_push_rules_follow_the_spec() -> None:
    rules = push_rules_response(UserId("@a:x"))["global"]
    assert [r["rule_id"] for r in rules["override"]] == [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
        ".m.rule.room.server_acl",
        ".m.rule.suppress_edits",
    ]
    assert [r["rule_id"] for r in rules["underride"]] == [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
    ]
    assert rules["content"] == [] and rules["room"] == [] and rules["sender"] == []
    master = rules["override"][0]
    assert master["enabled"] is False and master["actions"] == []
    for kind in ("override", "underride"):
        for rule in rules[kind]:
            assert rule["default"] is True
            assert rule["rule_id"].startswith(".")
            if rule["rule_id"] != ".m.rule.master":
                assert rule["enabled"] is True
    invite = rules["override"][2]
    assert {"kind": "event_match", "key": "state_key", "pattern": "@a:x"} in invite["conditions"]
    mention = rules["override"][4]
    assert mention["conditions"][0]["value"] == "@a:x"


def test_push_rules_are_fresh_objects() -> None:
    one = push_rules_response(UserId("@a:x"))
    one["global"]["override"].clear()
    assert push_rules_response(UserId("@a:x"))["global"]["override"]


def test_capabilities() -> None:
    caps = capabilities()["capabilities"]
    assert caps["m.room_versions"] == {
        "default": "11",
        "available": {"10": "stable", "11": "stable"},
    }
    assert caps["m.change_password"] == {"enabled": False}
    assert caps["m.set_displayname"]["enabled"] is True
