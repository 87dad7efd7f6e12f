"""What ``cis-node peers`` and ``cis-node trust`` see and change, for the running node (the
admin API) and for a stopped one (``node.db`` directly, holding the home's lock).

``trust set`` takes either DID form. ``trust rebind DID`` un-pins the key of the DID's server:
with a ``did:key`` (or a ``did:cis`` matching a refused claim recorded in ``key_conflicts``)
that key is pinned instead; otherwise the next authenticated handshake pins one.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from cis.federation.manager import TunnelManager
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.federation import FederationService, is_federated
from cis.handlers.federation_keys import KeyRing
from cis.handlers.federation_trust import NodeTrust
from cis.identity.did import parse_did, parse_did_cis
from cis.identity.errors import InvalidDid
from cis.identity.names import server_name_for
from cis.ids import RoomId
from cis.storage import federation as fed_store
from cis.storage.rooms import state_groups as sg
from cis.storage.rooms.store import RoomStore


def _did(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(Errcode.INVALID_PARAM, "Expected a did:cis or did:key")
    try:
        return str(parse_did(value))
    except InvalidDid as exc:
        raise ApiError(Errcode.INVALID_PARAM, str(exc)) from None


def _level(value: object) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ApiError(Errcode.INVALID_PARAM, "A trust level is 0, 1 or 2")
    assert isinstance(value, int)
    return value


def rebind_target(
    did: str, pinned: list[fed_store.ServerKeyRow], conflicts: list[fed_store.KeyConflictRow]
) -> tuple[str, str | None]:
    """``(server_name, did_key to pin or None)`` for ``trust rebind DID``."""
    if did.startswith("did:key:"):
        for conflict in conflicts:
            if conflict.did_key == did:
                return conflict.server_name, did
        for row in pinned:
            if row.did_key == did:
                return row.server_name, None
        raise InvalidDid(f"no server is known under {did}")
    node_id, _short = parse_did_cis(did)
    server = server_name_for(node_id)
    for conflict in conflicts:
        if conflict.server_name == server and conflict.did == did:
            return server, conflict.did_key
    return server, None


def rebind_offline(conn: sqlite3.Connection, did: str) -> dict[str, Any]:
    """``trust rebind`` on a stopped node's ``node.db`` (inside a write transaction)."""
    pinned = fed_store.server_keys(conn)
    conflicts = fed_store.key_conflicts(conn)
    server, did_key = rebind_target(did, pinned, conflicts)
    new = None
    if did_key is not None:
        chosen = next(c for c in conflicts if c.did_key == did_key)
        new = fed_store.ServerKeyRow(
            server, server.split(".", 1)[0], chosen.did, chosen.did_key, chosen.public_key,
            "rebind", chosen.last_seen_ms, chosen.last_seen_ms,
        )  # fmt: skip
    before = fed_store.rebind_txn(conn, server, new)
    return {
        "server_name": server,
        "unpinned": before.did_key if before is not None else None,
        "pinned": did_key,
    }


class FederationAdmin:
    def __init__(
        self, service: FederationService, trust: NodeTrust, keys: KeyRing, manager: TunnelManager
    ) -> None:
        self._service = service
        self._trust = trust
        self._keys = keys
        self._manager = manager

    async def peers(self) -> list[dict[str, Any]]:
        statuses = {s.did: s for s in self._manager.peers()}
        rows = await self._service.node_db.run_read("peers", fed_store.peers)
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row.did is None:
                continue
            out[row.did] = {
                "did": row.did, "node_id": row.node_id, "online": False, "rtt_ms": row.rtt_ms,
                "endpoint": row.endpoint, "remote": None, "last_seen_ms": row.last_seen_ms,
            }  # fmt: skip
        for did, status in statuses.items():
            entry = out.setdefault(did, {"did": did, "node_id": did.split(":")[2]})
            entry.update(
                online=status.online,
                rtt_ms=round(status.rtt_ms, 3)
                if status.rtt_ms is not None
                else entry.get("rtt_ms"),
                endpoint=status.endpoint,
                remote=status.remote,
                last_seen_ms=status.last_seen_ms,
                outbox=status.outbox,
            )
        for entry in out.values():
            known = self._keys.by_did(entry["did"])
            entry["did_key"] = known.did_key if known is not None else None
            entry["trust"] = self._trust.level(entry["did"], known.did_key if known else None)
        return sorted(out.values(), key=lambda e: str(e["node_id"]))

    def trust_list(self) -> dict[str, Any]:
        return {
            "default": self._trust.default,
            "entries": [{"did": e.trustee, "level": e.level} for e in self._trust.explicit()],
        }

    async def trust_set(self, body: dict[str, Any]) -> dict[str, Any]:
        did = _did(body.get("did"))
        level = _level(body.get("level"))
        stored = await self._trust.set(did, level)
        return {"did": stored, "level": level}

    async def rebind(self, body: dict[str, Any]) -> dict[str, Any]:
        did = _did(body.get("did"))
        pinned = await self._service.node_db.run_read("server_keys", fed_store.server_keys)
        conflicts = await self._service.node_db.run_read("key_conflicts", fed_store.key_conflicts)
        try:
            server, did_key = rebind_target(did, pinned, conflicts)
        except InvalidDid as exc:
            raise ApiError(Errcode.NOT_FOUND, str(exc)) from None
        before = await self._keys.rebind(server, did_key)
        peer_did = self._keys.did_of(server)
        self._manager.trust_changed(peer_did or did)
        return {
            "server_name": server,
            "unpinned": before.did_key if before is not None else None,
            "pinned": did_key,
        }

    async def room(self, room_id: str) -> dict[str, Any]:
        """A room as federation sees it: what tests compare across nodes."""
        snapshot = (
            await self._service.cache.get(RoomId(room_id)) if room_id.startswith("!") else None
        )
        if snapshot is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        store = RoomStore(self._service.cache.manager, snapshot.room_id)
        events = await store.run_read("all_event_ids", sg.all_event_ids)
        return {
            "room_id": snapshot.room_id,
            "federated": is_federated(snapshot),
            "extremities": sorted(snapshot.extremities),
            "state": {f"{t}|{k}": e.event_id for (t, k), e in sorted(snapshot.state.items())},
            "events": {event_id: status for event_id, status in events},
        }
