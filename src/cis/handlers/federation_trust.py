"""``did_trust``: what this node does with a peer (never whether an event is valid).

- Level 0: no tunnel either way (the tunnel layer asks ``level`` at every handshake and before
  every dial), no invites or joins exchanged with its users, nothing fetched from it; events
  its server signed are neither stored nor marked rejected, so they arrive normally once the
  level rises.
- Level 1: a tunnel; its users may be invited and may join; in rooms this node's users
  administer they get power level 0 (a local power-levels change raising them is refused).
- Level 2: full participation.

A peer is named by its ``did:cis`` or ``did:key``; an entry for either form applies, the
``did:key`` one first (it names the key exactly). A DID with no entry gets
``federation.default_trust``. ``level`` answers from memory (the tunnel layer calls it on the
event loop); ``set`` writes ``node.db`` first, then memory, then tells the listeners (the
tunnel manager closes or redials at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cis.identity.did import parse_did
from cis.identity.keys import NodeIdentity
from cis.ids import Did, DidKey
from cis.log import get_logger
from cis.storage import federation as fed_store
from cis.storage.database import Database

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrustEntry:
    trustee: str
    level: int


class NodeTrust:
    """The ``TrustPolicy`` of a running node, over ``did_trust`` in ``node.db``."""

    def __init__(self, identity: NodeIdentity, node_db: Database, default: int) -> None:
        self._identity = identity
        self._db = node_db
        self.default = default
        self._levels: dict[str, int] = {}
        self._listeners: list[Callable[[str, int], None]] = []

    async def load(self) -> None:
        self._levels = await self._db.run_read(
            "trust_levels", fed_store.trust_levels, self._identity.did
        )

    def add_listener(self, listener: Callable[[str, int], None]) -> None:
        self._listeners.append(listener)

    def level(self, did: Did, did_key: DidKey | None) -> int:
        if did_key is not None and did_key in self._levels:
            return self._levels[did_key]
        if did in self._levels:
            return self._levels[did]
        return self.default

    def explicit(self) -> list[TrustEntry]:
        return [TrustEntry(t, lv) for t, lv in sorted(self._levels.items())]

    def trustees(self) -> list[str]:
        return list(self._levels)

    async def set(self, trustee: str, level: int) -> str:
        """Set ``trustee``'s level (either DID form, checked); return the DID as stored."""
        if level not in (0, 1, 2):
            raise ValueError("a trust level is 0, 1 or 2")
        name = str(parse_did(trustee))
        await self._db.run_interaction(
            "set_trust", fed_store.set_trust_txn, self._identity.did, name, level
        )
        self._levels[name] = level
        log.info("trust_changed", did=name, level=level)
        for listener in list(self._listeners):
            try:
                listener(name, level)
            except Exception:
                log.exception("trust_listener_failed")
        return name
