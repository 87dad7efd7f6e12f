"""The authorisation rules as receipt runs them, with their outcomes remembered where the
rules read nothing of an event but its type, sender and room.

Receipt checks each event at least twice (against its auth events, against the state before
it); in a room's ordinary traffic thousands of messages by the same few senders are checked
against the same create, power levels and membership events, and parsing the power levels
dominates each check. ``AuthChecker.check`` calls ``cis.matrix.check_auth`` unchanged and keeps
its outcome (allowed, or the rule that refused) under a key holding every input the rules
read for such events, so a hit is the answer ``check_auth`` would give.

Invariants:

1. Only events the rules judge by type, sender and room alone are remembered: no state key,
   and a type other than ``m.room.create``, ``m.room.member``, ``m.room.third_party_invite``
   and ``m.room.power_levels`` (whose rules read the event's content or state key). For them
   ``check_auth`` (room versions 10 and 11) reads rule 3 (the create event's ``m.federate``
   and sender), rule 5 (the sender's membership), rule 7 (the sender's level and the level the
   type needs, from the create and power levels events) and nothing else.
2. The key is ``(room version, room id, type, sender)`` plus, for each of the three auth
   state entries read (create, power levels, the sender's membership), its event id or None,
   and the create event's ``m.federate``. An event id fixes an event's room, type, state key,
   sender and every content key redaction keeps (``membership``; the power levels' levels;
   v11's whole create content) because it is the hash of the redacted event; v10's create
   keeps only ``creator``, so its ``m.federate`` is in the key itself.
3. Bounded: the least recently used outcomes go first (``MAX_REMEMBERED``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from cis.matrix import AuthError, check_auth
from cis.matrix.auth import (
    CREATE,
    MEMBER,
    POWER_LEVELS,
    THIRD_PARTY_INVITE,
    content_federate_false,
)
from cis.matrix.events import EventLike, StateKey

MAX_REMEMBERED: Final = 8192
UNREMEMBERED_TYPES: Final = frozenset({CREATE, MEMBER, THIRD_PARTY_INVITE, POWER_LEVELS})

_Key = tuple[str, str, str, str, str | None, bool, str | None, str | None]


class AuthChecker:
    """``check_auth`` with outcomes remembered (module docstring)."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._max = max_remembered
        self._outcomes: OrderedDict[_Key, AuthError | None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def check(
        self,
        room_version: str,
        event: EventLike,
        auth_state: Mapping[StateKey, EventLike],
        *,
        is_signed_by: Callable[[str], bool] | None = None,
    ) -> None:
        """Raise ``AuthError`` unless the rules allow ``event`` given ``auth_state``, exactly
        as ``check_auth`` does."""
        key = _key(room_version, event, auth_state)
        if key is None:
            check_auth(room_version, event, auth_state, is_signed_by=is_signed_by)
            return
        if key in self._outcomes:
            self.hits += 1
            self._outcomes.move_to_end(key)
            refused = self._outcomes[key]
            if refused is not None:
                raise AuthError(refused.rule, refused.reason)
            return
        self.misses += 1
        outcome: AuthError | None = None
        try:
            check_auth(room_version, event, auth_state, is_signed_by=is_signed_by)
        except AuthError as exc:
            outcome = exc
        self._outcomes[key] = outcome
        while len(self._outcomes) > self._max:
            self._outcomes.popitem(last=False)
        if outcome is not None:
            raise AuthError(outcome.rule, outcome.reason)


def _key(
    room_version: str, event: EventLike, auth_state: Mapping[StateKey, EventLike]
) -> _Key | None:
    if event.state_key is not None or event.type in UNREMEMBERED_TYPES:
        return None
    create = auth_state.get((CREATE, ""))
    levels = auth_state.get((POWER_LEVELS, ""))
    member = auth_state.get((MEMBER, event.sender))
    return (
        room_version,
        event.room_id,
        event.type,
        event.sender,
        create.event_id if create is not None else None,
        content_federate_false(create) if create is not None else False,
        levels.event_id if levels is not None else None,
        member.event_id if member is not None else None,
    )
