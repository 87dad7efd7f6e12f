"""Admitting another node to a skill's room, and joining one: both sides, for skills whose
rooms other nodes follow (a repository room, a memory room).

The node that asks (``join_peer_room``) calls the ``admit`` peer method of the same skill on
the room's node, then joins the room through it, once. The room's node (``admit_node``) gives
the asking node's sovereign user the power its trust earns (``power_for_trust``: 0, read, at
level 1; 50, write, at level 2), never lowering a power its administrator gave, and invites
it (the room's join rule is ``invite``). Federation's policy applies to both events as to a
client's: a node at trust level 1 cannot be raised above 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cis.ids import RoomId
from cis.skills.contract import (
    POWER_ADMIN,
    POWER_MEMBER,
    CommandError,
    SkillApi,
    SkillDisabled,
    SkillError,
)

__all__ = ["admit_node", "join_peer_room", "power_for_trust", "sovereign_of"]

ADMIT_METHOD: Final = "admit"


def sovereign_of(node_id: str) -> str:
    return f"@cis:{node_id}.cis.local"


def power_for_trust(level: int) -> int:
    """The power a node trusted at ``level`` gets in a skill's room it is admitted to."""
    if level <= 0:
        raise CommandError("not trusted here (trust level 0)")
    return POWER_ADMIN if level >= 2 else POWER_MEMBER


async def admit_node(
    api: SkillApi, room_id: RoomId, node_id: str, power: int, *, lower: bool
) -> dict[str, Any]:
    """Give ``node_id``'s sovereign user ``power`` in ``room_id`` (at least its current power
    unless ``lower``) and invite it. The power is granted even when the invite cannot be made
    now (its node unreachable): the answer then holds ``invite_error``."""
    user = sovereign_of(node_id)
    try:
        levels = await api.get_state(room_id, "m.room.power_levels")
        content = dict(levels.content) if levels is not None else {}
        users = dict(content.get("users", {}))
        current = users.get(user, content.get("users_default", 0))
        if isinstance(current, int) and not lower:
            power = max(power, current)
        if current != power:
            users[user] = power
            content["users"] = users
            await api.send_state(room_id, "m.room.power_levels", "", content)
    except SkillDisabled:
        raise
    except SkillError as exc:
        raise CommandError(str(exc)) from None
    answer: dict[str, Any] = {"room_id": room_id, "user": user, "power": power}
    try:
        await api.invite(room_id, user)
    except SkillDisabled:
        raise
    except SkillError as exc:
        api.log.warning("skill_invite_failed", room_id=room_id, user=user, why=str(exc))
        answer["invite_error"] = str(exc)[:300]
    return answer


async def join_peer_room(
    api: SkillApi, home: str, room_id: RoomId, header: Mapping[str, Any]
) -> bool:
    """Ask ``home`` to admit this node to ``room_id`` (``header``: what its ``admit`` method
    needs), then join the room if this node has not. Return whether it is joined. Only
    ``SkillUnavailable`` (home unreachable) is raised; a refusal is logged."""
    try:
        await api.call_peer(home, ADMIT_METHOD, header)
    except CommandError as exc:
        api.log.warning("skill_admission_refused", room_id=room_id, home=home, why=str(exc))
        return False
    if await is_joined(api, room_id):
        return True
    try:
        await api.join_room(room_id, via=(home,))
    except SkillDisabled:
        raise
    except SkillError as exc:
        api.log.warning("skill_room_not_joined", room_id=room_id, why=str(exc))
        return False
    api.log.info("skill_room_joined", room_id=room_id, home=home)
    return True


async def is_joined(api: SkillApi, room_id: RoomId) -> bool:
    try:
        member = await api.get_state(room_id, "m.room.member", api.sovereign_user)
    except SkillDisabled:
        raise
    except SkillError:
        return False  # neither owned nor watched: never joined
    return member is not None and member.content.get("membership") == "join"
