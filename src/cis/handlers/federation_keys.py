"""Which Ed25519 key speaks for which server: the node's key ring.

Invariants:

1. A server name is bound to one key, pinned in ``node.db`` (``server_keys``) the first time
   the node learns it from a source that proves it: an authenticated tunnel handshake (the
   peer signed its Noise static key with it), an anchor record (signed by the key, the DID
   bound to it), or a self-signed key document whose key matches a DID the node already knows
   for that server (``did_trust``). A relay's word alone is never enough: a document from any
   peer counts only through its own signature, and only against a known DID.
2. A *different* key later claiming a pinned server is refused: recorded in ``key_conflicts``,
   logged as ``server_key_conflict``, and the handshake closed (``admission``) until an operator
   runs ``cis-node trust rebind``.
3. This node's own server is always known (its identity's key).
4. ``wait_for`` lets receipt hold an event whose origin key is not known yet, bounded in time;
   it wakes as soon as any source teaches the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

import nacl.signing

from cis.clock import Clock
from cis.federation.keys import InvalidKeyDocument, verify_server_keys
from cis.identity.did import (
    did_cis,
    did_key_from_public_key,
    parse_did_cis,
    public_key_from_did_key,
)
from cis.identity.errors import InvalidDid
from cis.identity.keys import NodeIdentity, matrix_verify_key
from cis.identity.names import node_id_of_server_name, server_name_for
from cis.ids import Did, DidKey, NodeId
from cis.log import get_logger
from cis.matrix import Event, SignatureError, verify_event_signature
from cis.storage import federation as fed_store
from cis.storage.database import Database

log = get_logger(__name__)

KEY_VALIDITY_MS: Final = 7 * 24 * 3600 * 1000
"""How far ahead this node's own key document says its key is valid."""


@dataclass(frozen=True, slots=True)
class KnownServer:
    server_name: str
    node_id: NodeId
    did: Did
    did_key: DidKey
    public_key: bytes
    source: str

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public_key.hex()[:16]}"


KeyDocumentFetcher = Callable[[str], Awaitable[list[bytes]]]
"""``server_name → key documents`` some peers handed over (unchecked)."""


class KeyRing:
    def __init__(self, identity: NodeIdentity, node_db: Database, clock: Clock) -> None:
        self._identity = identity
        self._db = node_db
        self._clock = clock
        own = KnownServer(
            identity.server_name,
            identity.node_id,
            identity.did,
            identity.did_key,
            identity.public_key,
            "self",
        )
        self._servers: dict[str, KnownServer] = {own.server_name: own}
        self._by_did: dict[str, KnownServer] = {own.did: own, own.did_key: own}
        self._verify_keys: dict[str, nacl.signing.VerifyKey] = {
            own.server_name: identity.verify_key
        }
        self._waiters: dict[str, asyncio.Event] = {}
        self._conflicts_logged: set[tuple[str, bytes]] = set()
        self.fetch_documents: KeyDocumentFetcher | None = None
        self.trusted_dids: Callable[[], Iterable[str]] = list

    async def load(self) -> None:
        rows = await self._db.run_read("server_keys", fed_store.server_keys)
        for row in rows:
            if row.server_name == self._identity.server_name:
                continue
            self._remember(
                KnownServer(
                    row.server_name,
                    NodeId(row.node_id),
                    Did(row.did),
                    DidKey(row.did_key),
                    row.public_key,
                    row.source,
                )
            )

    # ------------------------------------------------------------------ reading

    def server(self, server_name: str) -> KnownServer | None:
        return self._servers.get(server_name)

    def by_did(self, did: str) -> KnownServer | None:
        return self._by_did.get(did)

    def servers(self) -> list[KnownServer]:
        return sorted(self._servers.values(), key=lambda s: s.server_name)

    def did_of(self, server_name: str) -> Did | None:
        known = self._servers.get(server_name)
        return known.did if known is not None else None

    def verify_key(self, server_name: str, key_id: str) -> nacl.signing.VerifyKey | None:
        """The key ``server_name`` signs with under ``key_id``, if known."""
        known = self._servers.get(server_name)
        if known is None or known.key_id != key_id:
            return None
        return self._verify_keys.get(server_name)

    def key_ids(self, server_name: str) -> list[str]:
        known = self._servers.get(server_name)
        return [known.key_id] if known is not None else []

    def signed_by(self, event: Event, server_name: str) -> bool:
        """Whether ``event`` carries a valid signature by ``server_name`` under a key this
        node believes (auth rule 4.2, and receipt's first check)."""
        signatures = event.signatures.get(server_name) or {}
        for key_id in self.key_ids(server_name):
            verify_key = self.verify_key(server_name, key_id)
            if verify_key is None or key_id not in signatures:
                continue
            try:
                verify_event_signature(
                    event.room_version, event.to_pdu(), server_name, key_id, verify_key
                )
            except SignatureError:
                return False
            return True
        return False

    def own_document(self) -> bytes:
        from cis.federation.keys import build_server_keys

        return build_server_keys(self._identity, self._clock.time_ms() + KEY_VALIDITY_MS)

    # ------------------------------------------------------------------ admission

    def admission(self, did: Did, did_key: DidKey, public_key: bytes) -> str | None:
        """The tunnel layer's last word on an authenticated peer: refuse a key that claims a
        server pinned to another key (``Admission``)."""
        try:
            node_id, _short = parse_did_cis(did)
        except InvalidDid:
            return "not a did:cis"
        known = self._servers.get(server_name_for(node_id))
        if known is not None and known.public_key != public_key:
            self._log_conflict(known, did, did_key, public_key, "handshake")
            self._record_conflict(node_id, did, did_key, public_key, "handshake")
            return f"node {node_id} is bound to another key (cis-node trust rebind)"
        return None

    # ------------------------------------------------------------------ learning

    async def learn(self, did: str, did_key: str, source: str) -> bool:
        """Believe ``did``/``did_key`` (already proven by ``source``) for its server, unless
        another key holds that server; return whether it is the pinned key now."""
        try:
            node_id, _short = parse_did_cis(did)
            public_key = public_key_from_did_key(did_key)
        except InvalidDid:
            return False
        if did_cis(node_id, public_key) != did:
            return False
        server_name = server_name_for(node_id)
        known = self._servers.get(server_name)
        if known is not None:
            if known.public_key == public_key:
                return True
            self._log_conflict(known, Did(did), DidKey(did_key), public_key, source)
            self._record_conflict(node_id, Did(did), DidKey(did_key), public_key, source)
            return False
        entry = KnownServer(server_name, node_id, Did(did), DidKey(did_key), public_key, source)
        self._remember(entry)
        now = self._clock.time_ms()
        row = fed_store.ServerKeyRow(
            server_name, node_id, did, did_key, public_key, source, now, now
        )
        pinned = await self._db.run_interaction("pin_server_key", fed_store.pin_server_key_txn, row)
        if pinned:
            log.info("server_key_learned", server=server_name, did=did, source=source)
        return pinned

    async def learn_document(self, document: bytes, server_name: str) -> bool:
        """A key document handed over by any peer: believed only when self-signed *and* its
        key matches a DID this node already knows for the server (invariant 1)."""
        try:
            keys = verify_server_keys(document, server_name)
        except InvalidKeyDocument as exc:
            log.info("key_document_refused", server=server_name, reason=str(exc))
            return False
        node_id = node_id_of_server_name(server_name)
        if node_id is None:
            return False
        for public_key in keys.verify_keys.values():
            did = did_cis(node_id, public_key)
            did_key = did_key_from_public_key(public_key)
            known_dids = set(self.trusted_dids())
            if did_key in known_dids or did in known_dids:
                return await self.learn(did, did_key, "key_document")
        log.info("key_document_unanchored", server=server_name)
        return False

    async def rebind(self, server_name: str, did_key: str | None) -> KnownServer | None:
        """Forget the key pinned for ``server_name``; pin ``did_key`` instead when given (the
        next authenticated handshake pins one otherwise). Return what was pinned."""
        before = self._servers.pop(server_name, None)
        if before is not None:
            self._by_did.pop(before.did, None)
            self._by_did.pop(before.did_key, None)
            self._verify_keys.pop(server_name, None)
        new_row = None
        if did_key is not None:
            public_key = public_key_from_did_key(did_key)
            node_id = node_id_of_server_name(server_name)
            if node_id is None:
                raise InvalidDid(f"{server_name} is not a CIS server name")
            did = did_cis(node_id, public_key)
            now = self._clock.time_ms()
            new_row = fed_store.ServerKeyRow(
                server_name, node_id, did, did_key, public_key, "rebind", now, now
            )
            self._remember(
                KnownServer(server_name, node_id, did, DidKey(did_key), public_key, "rebind")
            )
        await self._db.run_interaction("rebind_server", fed_store.rebind_txn, server_name, new_row)
        self._conflicts_logged = {c for c in self._conflicts_logged if c[0] != server_name}
        log.warning("server_key_rebound", server=server_name, did_key=did_key)
        return before

    async def wait_for(self, server_name: str, within: float) -> bool:
        """Wait until a key for ``server_name`` is known (asking peers for its document once);
        return whether it is."""
        if server_name in self._servers:
            return True
        event = self._waiters.setdefault(server_name, asyncio.Event())
        fetch = self.fetch_documents
        try:
            async with asyncio.timeout(within):  # one bound for asking and waiting together
                if fetch is not None:
                    try:
                        for document in await fetch(server_name):
                            if await self.learn_document(document, server_name):
                                return True
                    except Exception as exc:
                        log.info("key_fetch_failed", server=server_name, error=type(exc).__name__)
                await event.wait()
        except TimeoutError:
            pass
        return server_name in self._servers

    # ------------------------------------------------------------------ internals

    def _remember(self, entry: KnownServer) -> None:
        self._servers[entry.server_name] = entry
        self._by_did[entry.did] = entry
        self._by_did[entry.did_key] = entry
        self._verify_keys[entry.server_name] = matrix_verify_key(entry.public_key)
        waiter = self._waiters.pop(entry.server_name, None)
        if waiter is not None:
            waiter.set()

    def _log_conflict(
        self, known: KnownServer, did: Did, did_key: DidKey, public_key: bytes, source: str
    ) -> None:
        marker = (known.server_name, public_key)
        if marker in self._conflicts_logged:
            return
        self._conflicts_logged.add(marker)
        log.warning(
            "server_key_conflict",
            server=known.server_name,
            pinned=known.did_key,
            claimed=did_key,
            claimed_did=did,
            source=source,
        )

    def _record_conflict(
        self, node_id: NodeId, did: Did, did_key: DidKey, public_key: bytes, source: str
    ) -> None:
        now = self._clock.time_ms()
        row = fed_store.ServerKeyRow(
            server_name_for(node_id), node_id, did, did_key, public_key, source, now, now
        )
        future = self._db.submit("record_key_conflict", fed_store.pin_server_key_txn, row)
        future.add_done_callback(lambda f: f.exception())
