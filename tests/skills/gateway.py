"""A ``RoomGateway`` for tests that run the skill host without the Client-Server API.

It builds events the way a node does (``prepare_pdu`` on the room's extremities and state,
``build_event`` with the node's key, ``check_auth`` against the state) and stores them in the
real Room Store, one room at a time under a lock, with txn ids committed with their event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cis.clock import Clock
from cis.identity import NodeIdentity
from cis.ids import EventId, RoomId
from cis.matrix import Event, build_event, check_auth, parse_pdu, prepare_pdu
from cis.skills.gateway import EventDraft
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.types import TxnKey


class CoreGateway:
    def __init__(self, rooms: RoomStoreManager, identity: NodeIdentity, clock: Clock) -> None:
        self.rooms = rooms
        self.identity = identity
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self.sent = 0

    def _build(
        self,
        room_version: str,
        room_id: str,
        draft: EventDraft,
        extremities: list[Event],
        state: dict[tuple[str, str], Event],
    ) -> Event:
        pdu = prepare_pdu(
            room_version,
            room_id=room_id,
            sender=draft.sender,
            event_type=draft.type,
            content=draft.content,
            origin_server_ts=self.clock.time_ms(),
            forward_extremities=extremities,
            current_state={key: event.event_id for key, event in state.items()},
            state_key=draft.state_key,
        )
        identity = self.identity
        event = build_event(
            room_version, pdu, identity.server_name, identity.key_id, identity.signing_key
        )
        check_auth(room_version, event, state)
        return event

    async def create_room(
        self, room_id: RoomId, room_version: str, events: Sequence[EventDraft]
    ) -> None:
        state: dict[tuple[str, str], Event] = {}
        built: list[Event] = []
        for draft in events:
            event = self._build(room_version, room_id, draft, built[-1:], state)
            if event.state_key is not None:
                state[(event.type, event.state_key)] = event
            built.append(event)
        store = await self.rooms.get_or_create(room_id)
        await store.store_events(built)

    async def send(
        self, room_id: RoomId, draft: EventDraft, *, txn: TxnKey | None = None
    ) -> EventId:
        lock = self._locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            store = await self.rooms.get(room_id)
            if store is None:
                raise LookupError(room_id)
            if txn is not None:
                known = await store.event_id_for_txn(txn)
                if known is not None:
                    return known
            state, extremities = await _state_and_extremities(store)
            room_version = state[("m.room.create", "")].room_version
            event = self._build(room_version, room_id, draft, extremities, state)
            await store.store_event(event, txn=txn)
            self.sent += 1
            return event.event_id


async def _state_and_extremities(
    store: RoomStore,
) -> tuple[dict[tuple[str, str], Event], list[Event]]:
    ids = await store.current_state()
    tips = await store.forward_extremities()
    found = await store.get_events([*ids.values(), *tips])
    state = {key: parse_pdu(found[eid].room_version, found[eid].pdu()) for key, eid in ids.items()}
    extremities = [parse_pdu(found[eid].room_version, found[eid].pdu()) for eid in tips]
    return state, extremities
