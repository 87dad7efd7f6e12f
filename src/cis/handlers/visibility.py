"""History visibility: which events a user may see (Client-Server API §"Room History
Visibility", "Server behaviour").

The rules are applied with the room's state *at* each event:

1. ``history_visibility`` was ``world_readable``: allow;
2. the user's membership was ``join``: allow;
3. it was ``shared`` and the user joined at any point after the event: allow;
4. the user's membership was ``invite`` and it was ``invited``: allow;
5. otherwise deny.

An ``m.room.history_visibility`` event is visible if the rules allow it with the visibility
before *or* after it; the user's own ``m.room.member`` events likewise with their membership
before or after. A missing or unknown visibility counts as ``shared``.

``VisibilityTimeline`` holds, for one user and one room, the changes of the user's membership
and of the room's visibility ordered by position (the room's stream order), so checking a page
of events costs a binary search per event rather than a state lookup.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

VISIBILITIES: Final = frozenset({"world_readable", "shared", "invited", "joined"})
DEFAULT_VISIBILITY: Final = "shared"


def normalise_visibility(value: object) -> str:
    return value if isinstance(value, str) and value in VISIBILITIES else DEFAULT_VISIBILITY


def allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    """Rules 1-5 for one (visibility, membership) pair."""
    if visibility == "world_readable":
        return True
    if membership == "join":
        return True
    if visibility == "shared" and joined_later:
        return True
    return membership == "invite" and visibility == "invited"


@dataclass(frozen=True, slots=True)
class Change:
    """A state change at ``position``: the value after it (membership or visibility)."""

    position: int
    value: str


class VisibilityTimeline:
    """One user's membership changes and one room's visibility changes, by position."""

    __slots__ = ("_join_positions", "_member_pos", "_member_val", "_vis_pos", "_vis_val")

    def __init__(self, memberships: Iterable[Change], visibilities: Iterable[Change]) -> None:
        members = sorted(memberships, key=lambda c: c.position)
        vis = sorted(visibilities, key=lambda c: c.position)
        self._member_pos = [c.position for c in members]
        self._member_val = [c.value for c in members]
        self._vis_pos = [c.position for c in vis]
        self._vis_val = [normalise_visibility(c.value) for c in vis]
        self._join_positions = [c.position for c in members if c.value == "join"]

    def _membership_before(self, position: int) -> str | None:
        i = bisect.bisect_left(self._member_pos, position)
        return self._member_val[i - 1] if i else None

    def _membership_after(self, position: int) -> str | None:
        i = bisect.bisect_right(self._member_pos, position)
        return self._member_val[i - 1] if i else None

    def _visibility_before(self, position: int) -> str:
        i = bisect.bisect_left(self._vis_pos, position)
        return self._vis_val[i - 1] if i else DEFAULT_VISIBILITY

    def _visibility_after(self, position: int) -> str:
        i = bisect.bisect_right(self._vis_pos, position)
        return self._vis_val[i - 1] if i else DEFAULT_VISIBILITY

    def _joined_after(self, position: int) -> bool:
        i = bisect.bisect_right(self._join_positions, position)
        return i < len(self._join_positions)

    def can_see(
        self,
        position: int,
        event_type: str,
        state_key: str | None,
        user_id: str,
    ) -> bool:
        """Whether the user may see the event at ``position`` (see the module docstring)."""
        joined_later = self._joined_after(position)
        visibility = self._visibility_before(position)
        membership = self._membership_before(position)
        if allowed(visibility, membership, joined_later):
            return True
        if event_type == "m.room.history_visibility" and state_key == "":
            return allowed(self._visibility_after(position), membership, joined_later)
        if event_type == "m.room.member" and state_key == user_id:
            return allowed(visibility, self._membership_after(position), joined_later)
        return False

    def filter_positions(
        self, events: Sequence[tuple[int, str, str | None]], user_id: str
    ) -> list[bool]:
        """``can_see`` for each ``(position, type, state_key)``."""
        return [self.can_see(p, t, k, user_id) for p, t, k in events]
