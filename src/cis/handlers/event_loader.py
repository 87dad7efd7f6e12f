"""Loading events for clients: bodies from the room's file, redactions applied, client format.

A redacted event is served as its room version's redacted form with the redaction in
``unsigned.redacted_because`` (Client-Server API §"Redactions"). ``unsigned.transaction_id``
goes only to the device that sent the event (§"Transaction identifiers").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from cis.clock import Clock
from cis.handlers.auth import Requester
from cis.handlers.client_events import client_event
from cis.handlers.room_cache import EventCreator, to_event
from cis.handlers.stream_watch import Redactions
from cis.ids import EventId, RoomId
from cis.matrix import Event
from cis.storage.events import StoredEvent


class EventLoader:
    def __init__(self, creator: EventCreator, redactions: Redactions, clock: Clock) -> None:
        self._creator = creator
        self._redactions = redactions
        self._clock = clock

    async def stored(
        self, room_id: RoomId, event_ids: Sequence[EventId]
    ) -> dict[EventId, StoredEvent]:
        if not event_ids:
            return {}
        store = await self._creator.cache.manager.get(room_id)
        if store is None:
            return {}
        return await store.get_events(list(event_ids))

    async def _bodies(
        self, room_id: RoomId, event_ids: Sequence[EventId]
    ) -> dict[EventId, Event | StoredEvent]:
        """Events created here come from memory; the rest from the room's file."""
        recent = self._creator.recent
        found: dict[EventId, Event | StoredEvent] = {
            e: recent[e] for e in event_ids if e in recent and recent[e].room_id == room_id
        }
        missing = [e for e in event_ids if e not in found]
        if missing:
            found.update(await self.stored(room_id, missing))
        return found

    async def load(
        self,
        room_id: RoomId,
        event_ids: Sequence[EventId],
        requester: Requester | None,
        *,
        include_room_id: bool = True,
    ) -> dict[EventId, dict[str, Any]]:
        """Client-format events by id (ids the room does not hold are left out)."""
        if not event_ids:
            return {}
        fresh = {e for e in event_ids if e in self._creator.recent}
        found, redacted = await asyncio.gather(
            self._bodies(room_id, event_ids), self._redactions.of(list(event_ids), fresh)
        )
        return await self._finish(
            room_id, event_ids, found, redacted, requester, include_room_id=include_room_id
        )

    async def format(
        self,
        room_id: RoomId,
        events: Sequence[Event | StoredEvent],
        requester: Requester | None,
        *,
        include_room_id: bool = True,
    ) -> list[dict[str, Any]]:
        """Client-format events already read (redactions applied), in the order given."""
        if not events:
            return []
        ids = [e.event_id for e in events]
        fresh = {e for e in ids if e in self._creator.recent}
        redacted = await self._redactions.of(ids, fresh)
        found: dict[EventId, Event | StoredEvent] = {e.event_id: e for e in events}
        out = await self._finish(
            room_id, ids, found, redacted, requester, include_room_id=include_room_id
        )
        return [out[i] for i in ids if i in out]

    async def _finish(
        self,
        room_id: RoomId,
        event_ids: Sequence[EventId],
        found: dict[EventId, Event | StoredEvent],
        redacted: dict[EventId, EventId],
        requester: Requester | None,
        *,
        include_room_id: bool,
    ) -> dict[EventId, dict[str, Any]]:
        redactions: dict[EventId, dict[str, Any]] = {}
        if redacted:
            loaded = await self._bodies(room_id, list(set(redacted.values())))
            redactions = {
                eid: self._format(ev, requester, include_room_id) for eid, ev in loaded.items()
            }
        now = self._clock.time_ms()
        out: dict[EventId, dict[str, Any]] = {}
        for event_id in event_ids:
            stored = found.get(event_id)
            if stored is None:
                continue
            redaction_id = redacted.get(event_id)
            if redaction_id is not None:
                event = stored if isinstance(stored, Event) else to_event(stored)
                pdu = event.redacted().to_pdu()
                out[event_id] = client_event(
                    pdu,
                    event_id,
                    now_ms=now,
                    redacted_because=redactions.get(redaction_id),
                    include_room_id=include_room_id,
                )
            else:
                out[event_id] = self._format(stored, requester, include_room_id, now)
        return out

    def _format(
        self,
        stored: Event | StoredEvent,
        requester: Requester | None,
        include_room_id: bool,
        now: int | None = None,
    ) -> dict[str, Any]:
        txn_id = None
        if requester is not None and stored.sender == requester.user_id:
            sent = self._creator.sent_by.get(stored.event_id)
            if sent is not None and sent[0] == requester.device_id:
                txn_id = sent[1]
        return client_event(
            json.loads(stored.canonical_bytes),
            stored.event_id,
            now_ms=self._clock.time_ms() if now is None else now,
            transaction_id=txn_id,
            include_room_id=include_room_id,
        )
