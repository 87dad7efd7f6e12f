"""What this node does with a peer: the ``TrustPolicy`` seam.

The levels are ``did_trust.trust_level`` (docs/ARCHITECTURE.md "Names"): 0 refuses the tunnel
both ways, 1 and 2 allow it (what else they allow is the node's business, never whether an event
is valid). The table lives in ``node.db``, owned by the node; the tunnel layer only asks.
``level`` is called on the event loop for every handshake, so implementations answer from
memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Protocol

from cis.ids import Did, DidKey


class TrustLevel(IntEnum):
    BLOCKED = 0
    READ = 1
    WRITE = 2


class TrustPolicy(Protocol):
    def level(self, did: Did, did_key: DidKey) -> int:
        """0, 1 or 2 for the peer named by ``did`` (whose key ``did_key`` names)."""
        ...


class StaticTrust:
    """A ``TrustPolicy`` held in a dict, keyed by either DID form; for tests and tools."""

    def __init__(self, levels: Mapping[str, int] | None = None, default: int = 1) -> None:
        self._levels: dict[str, int] = dict(levels or {})
        self.default = default

    def set(self, did: str, level: int) -> None:
        self._levels[did] = TrustLevel(level)

    def level(self, did: Did, did_key: DidKey) -> int:
        if did in self._levels:
            return self._levels[did]
        return self._levels.get(did_key, self.default)
