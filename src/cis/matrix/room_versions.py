"""The room versions this node implements, and what differs between them.

Rooms versions 10 and 11 (``content/rooms/v10.md``, ``v11.md``) share the event format of v4+,
state resolution v2, canonical JSON and the auth rule numbering. Version 11 changes:

- the redaction algorithm (``fragments/v11-redactions``): top-level ``origin``, ``membership``
  and ``prev_state`` are no longer kept; ``m.room.create`` keeps all of ``content``;
  ``m.room.redaction`` keeps ``content.redacts``; ``m.room.power_levels`` keeps ``invite``;
  ``m.room.member`` keeps ``third_party_invite.signed``;
- the creator is the ``sender`` of ``m.room.create`` (v10 reads ``content.creator``), in auth
  rules 1 and 4.3.1 and in the implicit power level of a room without ``m.room.power_levels``;
- ``redacts`` moves from the top level into ``content``.

Version 11 is the default for new rooms. Version 12 and later are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cis.matrix.errors import UnsupportedRoomVersion


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    updated_redaction_rules: bool
    """v11 redaction rules (MSC2176, MSC3821, MSC3989)."""
    implicit_room_creator: bool
    """The creator is the sender of ``m.room.create``, not ``content.creator`` (MSC2175)."""
    redacts_in_content: bool
    """``m.room.redaction`` carries ``content.redacts`` instead of a top-level ``redacts``."""


V10: Final = RoomVersion(
    "10", updated_redaction_rules=False, implicit_room_creator=False, redacts_in_content=False
)
V11: Final = RoomVersion(
    "11", updated_redaction_rules=True, implicit_room_creator=True, redacts_in_content=True
)

SUPPORTED_ROOM_VERSIONS: Final[dict[str, RoomVersion]] = {"10": V10, "11": V11}
DEFAULT_ROOM_VERSION: Final = "11"


def get_room_version(identifier: object) -> RoomVersion:
    """The ``RoomVersion`` named by ``identifier`` (``"10"`` or ``"11"``)."""
    if isinstance(identifier, str):
        found = SUPPORTED_ROOM_VERSIONS.get(identifier)
        if found is not None:
            return found
    raise UnsupportedRoomVersion(identifier)
