"""Errors of the Matrix core::

CisError
└── MatrixError
    ├── InvalidJson             a value outside canonical JSON's domain
    ├── InvalidPdu              a PDU that breaks its room version's event format
    ├── SignatureError          a missing or bad signature
    ├── AuthError               an event the authorisation rules reject; ``rule`` names the rule
    ├── UnsupportedRoomVersion  a room version other than "10" and "11"
    └── MissingEvents           events needed to go on are not known; ``event_ids`` names them
"""

from __future__ import annotations

from collections.abc import Iterable

from cis.errors import CisError
from cis.ids import EventId


class MatrixError(CisError):
    """Something about a Matrix event, its JSON or its room is wrong."""


class InvalidJson(MatrixError):
    """A value canonical JSON cannot carry: a float, an integer outside ±(2^53−1), a lone
    surrogate, a non-string key, NaN, a duplicate key, or a type JSON does not have."""


class InvalidPdu(MatrixError):
    """A PDU that is not a valid event for its room version (dropped on receipt, per the
    server-server API, "Checks performed on receipt of a PDU", step 1)."""


class SignatureError(MatrixError):
    """A signature is missing, malformed or does not verify (receipt step 2: dropped)."""


class AuthError(MatrixError):
    """The authorisation rules reject an event.

    ``rule`` is the number of the rule in the room version's "Authorisation rules" list
    (v10/v11 share the numbering), e.g. ``"4.3.4"`` or ``"9.8"``.
    """

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"auth rule {rule}: {reason}")
        self.rule = rule
        self.reason = reason


class UnsupportedRoomVersion(MatrixError):
    """A room version this node does not implement (only "10" and "11" are)."""

    def __init__(self, room_version: object) -> None:
        shown = repr(room_version)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        super().__init__(f"unsupported room version {shown}: this node supports 10 and 11")
        self.room_version = room_version


class MissingEvents(MatrixError):
    """Events that are needed (an auth chain, cited auth events) are not at hand."""

    def __init__(self, event_ids: Iterable[str]) -> None:
        ids = frozenset(EventId(i) for i in event_ids)
        shown = ", ".join(sorted(ids)[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        super().__init__(f"{len(ids)} event(s) missing: {shown}{more}")
        self.event_ids: frozenset[EventId] = ids
