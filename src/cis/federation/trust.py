"""What this node does with a peer: the ``TrustPolicy`` seam.

The levels are ``did_trust.trust_level`` (docs/ARCHITECTURE.md "Names"): 0 refuses the tunnel
both ways, 1 and 2 allow it (what else they allow is the node's business, never whether an event
is valid). The table lives in ``node.db``, owned by the node; the tunnel layer only asks.
``level`` is called on the event loop for every handshake, so implementations answer from
memory. ``did_key`` is None when only the ``did:cis`` is known (before dialling a peer met
through the anchor or configuration); the handshake always asks again with both.

``Admission`` is the other seam: a last word on an authenticated peer, returning a refusal
reason or None. The node uses it for what only node.db knows, e.g. a ``node_id`` pinned to
another key until ``cis-node trust rebind``.
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
    def level(self, did: Did, did_key: DidKey | None) -> int:
        """0, 1 or 2 for the peer named by ``did`` (whose key ``did_key`` names)."""
        ...


class Admission(Protocol):
    def __call__(self, did: Did, did_key: DidKey, public_key: bytes) -> str | None:
        """A reason to refuse this authenticated peer (closed with 1008), or None."""
        ...


class StaticTrust:
    """A ``TrustPolicy`` held in a dict, keyed by either DID form; for tests and tools."""

    def __init__(self, levels: Mapping[str, int] | None = None, default: int = 1) -> None:
        self._levels: dict[str, int] = dict(levels or {})
        self.default = default

    def set(self, did: str, level: int) -> None:
        self._levels[did] = TrustLevel(level)

    def level(self, did: Did, did_key: DidKey | None) -> int:
        if did in self._levels:
            return self._levels[did]
        if did_key is not None and did_key in self._levels:
            return self._levels[did_key]
        return self.default
