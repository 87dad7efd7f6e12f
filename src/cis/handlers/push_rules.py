"""The server-default push rules (Client-Server API §"Predefined Rules", spec v1.17).

Clients fetch ``GET /pushrules/`` at start and read the ``m.push_rules`` account data; this
server does not send push notifications, but it gives every user the spec's default rule set so
clients that display or edit rules work. The list order is the spec's, which is also priority
order within each kind. Spec v1.17 removed the legacy body-matching rules
(``.m.rule.contains_user_name``, ``.m.rule.contains_display_name``, ``.m.rule.roomnotif``), so
``content`` is empty.
"""

from __future__ import annotations

from typing import Any, Final

from cis.ids import UserId

PUSH_RULES_ACCOUNT_DATA_TYPE: Final = "m.push_rules"

_SOUND_DEFAULT: Final = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT: Final = {"set_tweak": "highlight"}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any]) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": rule_id != ".m.rule.master",
        "conditions": conditions,
        "actions": actions,
    }


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def default_push_rules(user_id: UserId) -> dict[str, Any]:
    """The ``global`` ruleset for ``user_id`` (a fresh object the caller may modify)."""
    override = [
        _rule(".m.rule.master", [], []),
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(
            ".m.rule.is_user_mention",
            [
                {
                    "kind": "event_property_contains",
                    "key": "content.m\\.mentions.user_ids",
                    "value": user_id,
                }
            ],
            ["notify", dict(_SOUND_DEFAULT), dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", dict(_HIGHLIGHT)],
        ),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(
            ".m.rule.room.server_acl",
            [_match("type", "m.room.server_acl"), _match("state_key", "")],
            [],
        ),
        _rule(
            ".m.rule.suppress_edits",
            [
                {
                    "kind": "event_property_is",
                    "key": "content.m\\.relates_to.rel_type",
                    "value": "m.replace",
                }
            ],
            [],
        ),
    ]
    underride = [
        _rule(
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}],
        ),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
            ["notify", dict(_SOUND_DEFAULT)],
        ),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ]
    return {"override": override, "content": [], "room": [], "sender": [], "underride": underride}


def push_rules_response(user_id: UserId) -> dict[str, Any]:
    """The body of ``GET /pushrules/`` and the content of ``m.push_rules`` account data."""
    return {"global": default_push_rules(user_id)}
