"""Stream tokens: ``/sync``'s ``since``/``next_batch`` and ``/messages``' ``from``/``to``.

A sync token is one position per stream, so a single opaque string says how far a client has
read each of them: ``s{events}_{receipts}_{account_data}_{typing}_{to_device}_{device_lists}``.
Every component is a plain non-negative integer in its own stream's order:

- ``events``: the node-wide event stream position (``node.db``'s index), never past a
  position allocated but not yet indexed;
- ``receipts``, ``account_data``, ``to_device``, ``device_lists``: ids of rows in ``node.db``,
  so they survive a restart;
- ``typing``: typing notices live in memory only; their positions start from the wall clock in
  milliseconds at start-up, so positions after a restart are above any issued before it.

A token from the future (a client that read from a node since restored from a backup, or
clock skew in ``typing``) is clamped to the current positions component by component, so a
client never long-polls for positions that will not come.

``/messages`` pages by topological order: ``t{depth}_{stream}`` names the place between events
ordered by ``(depth, stream)``. It also accepts a sync token there (its ``events`` position).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from cis.handlers.errors import ApiError, Errcode

_MAX_DIGITS: Final = 19
STREAMS: Final = ("events", "receipts", "account_data", "typing", "to_device", "device_lists")


def _parse_int(text: str) -> int:
    if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
        raise ValueError("not a position")
    return int(text)


@dataclass(frozen=True, slots=True)
class StreamToken:
    """One position per stream; see the module docstring."""

    events: int = 0
    receipts: int = 0
    account_data: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0

    def serialize(self) -> str:
        return (
            f"s{self.events}_{self.receipts}_{self.account_data}_"
            f"{self.typing}_{self.to_device}_{self.device_lists}"
        )

    def __str__(self) -> str:
        return self.serialize()

    @classmethod
    def parse(cls, text: str) -> StreamToken:
        """Parse a token this server issued; anything else is ``M_INVALID_PARAM``."""
        if not text.startswith("s"):
            raise _invalid()
        parts = text[1:].split("_")
        if len(parts) != len(STREAMS):
            raise _invalid()
        try:
            return cls(*(_parse_int(p) for p in parts))
        except ValueError:
            raise _invalid() from None

    def clamp(self, current: StreamToken) -> StreamToken:
        """Each component no later than ``current``'s (a token from the future is pulled back)."""
        return StreamToken(
            *(min(getattr(self, f.name), getattr(current, f.name)) for f in fields(self))
        )

    def is_before(self, other: StreamToken) -> bool:
        """True if any stream of ``other`` is ahead of this token's."""
        return any(getattr(self, f.name) < getattr(other, f.name) for f in fields(self))


@dataclass(frozen=True, slots=True, order=True)
class TopologicalToken:
    """A place in a room's ``(depth, stream)`` order: between events, never on one."""

    depth: int
    stream: int

    def serialize(self) -> str:
        return f"t{self.depth}_{self.stream}"

    def __str__(self) -> str:
        return self.serialize()


def parse_pagination_token(text: str) -> TopologicalToken | StreamToken:
    """``/messages`` ``from``/``to``: a topological token or a sync token."""
    if text.startswith("t"):
        parts = text[1:].split("_")
        if len(parts) != 2:
            raise _invalid()
        try:
            return TopologicalToken(_parse_int(parts[0]), _parse_int(parts[1]))
        except ValueError:
            raise _invalid() from None
    return StreamToken.parse(text)


def _invalid() -> ApiError:
    return ApiError(Errcode.INVALID_PARAM, "Invalid pagination or sync token")
