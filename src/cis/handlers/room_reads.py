"""Reading rooms: ``/messages``, ``/context``, ``/event``, ``/state``, ``/members``,
``/joined_members``, ``/joined_rooms`` — gated by membership and history visibility.

Who may read what (Client-Server API §"Room History Visibility" and the endpoints' texts):

- events (``/messages``, ``/context``, ``/event``) pass the history-visibility rules
  (``cis.handlers.visibility``) event by event, with the user's membership history and the
  room's visibility history read from ``node.db``'s index; an event the user may not see is
  404 ``M_NOT_FOUND`` on ``/event`` and left out of pages;
- state and members: a joined user (or anyone, in a ``world_readable`` room) reads the current
  state; a user who left reads the state as it was when they left; anyone else gets 403
  ``M_FORBIDDEN``.

Pagination tokens name a stream position: ``t{depth}_{position}`` means "between the event at
``position`` and the next one". Walking backwards returns events at or below it, forwards
events above it. Pages are ordered by stream position, which for a room's own events is their
topological order (each new event is built on the previous one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cis.handlers.auth import Requester
from cis.handlers.errors import ApiError, Errcode
from cis.handlers.event_loader import EventLoader
from cis.handlers.filters import RoomEventFilter
from cis.handlers.room_cache import RoomCache, RoomSnapshot
from cis.handlers.sync_tokens import StreamToken, TopologicalToken, parse_pagination_token
from cis.handlers.visibility import Change, VisibilityTimeline
from cis.ids import EventId, RoomId, UserId
from cis.storage.client import timeline
from cis.storage.database import Database
from cis.storage.events import StoredEvent
from cis.storage.rooms.types import MAX_LIMIT
from cis.storage.stream import StreamPositions

MAX_PAGE_SCAN: Final = 5
"""Chunks of rows read to fill one filtered page, at most."""


@dataclass(frozen=True, slots=True)
class Access:
    """How far a user may read a room's state: ``upto`` is the position of the state."""

    snapshot: RoomSnapshot
    current: bool
    upto: int


def token_position(text: str) -> int:
    token = parse_pagination_token(text)
    if isinstance(token, TopologicalToken):
        return token.stream
    if isinstance(token, StreamToken):
        return token.events
    raise ApiError(Errcode.INVALID_PARAM, "Invalid token")  # pragma: no cover


class RoomReader:
    def __init__(
        self,
        *,
        cache: RoomCache,
        loader: EventLoader,
        node_db: Database,
        positions: StreamPositions,
    ) -> None:
        self._cache = cache
        self._loader = loader
        self._db = node_db
        self._positions = positions

    async def _snapshot(self, room_id: str) -> RoomSnapshot:
        if not room_id.startswith("!") or ":" not in room_id:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        snapshot = await self._cache.get(RoomId(room_id))
        if snapshot is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        return snapshot

    # ------------------------------------------------------------------ visibility

    async def visibility(self, room_id: RoomId, user_id: UserId) -> VisibilityTimeline:
        members = await self._db.run_read(
            "key_history", timeline.key_history, room_id, "m.room.member", user_id
        )
        vis = await self._db.run_read(
            "key_history", timeline.key_history, room_id, "m.room.history_visibility", ""
        )
        bodies = await self._loader.stored(room_id, [r.event_id for r in (*members, *vis)])
        member_changes = [
            Change(r.position, str(bodies[r.event_id].content.get("membership")))
            for r in members
            if r.event_id in bodies
        ]
        vis_changes = [
            Change(r.position, str(bodies[r.event_id].content.get("history_visibility")))
            for r in vis
            if r.event_id in bodies
        ]
        return VisibilityTimeline(member_changes, vis_changes)

    async def _visible(
        self, room_id: RoomId, user_id: UserId, rows: Sequence[timeline.StreamRow]
    ) -> list[timeline.StreamRow]:
        if not rows:
            return []
        view = await self.visibility(room_id, user_id)
        return [r for r in rows if view.can_see(r.position, r.type, r.state_key, user_id)]

    async def access(self, requester: Requester, room_id: str) -> Access:
        """Whether (and as of when) the user may read the room's state and members."""
        snapshot = await self._snapshot(room_id)
        upto = self._positions.current
        if snapshot.membership(requester.user_id) == "join":
            return Access(snapshot, True, upto)
        hv = snapshot.content("m.room.history_visibility") or {}
        if hv.get("history_visibility") == "world_readable":
            return Access(snapshot, True, upto)
        row = await self._db.run_read(
            "membership_of", timeline.membership_of, snapshot.room_id, requester.user_id
        )
        if row is not None and row.membership in ("leave", "ban"):
            history = await self._db.run_read(
                "key_history", timeline.key_history, snapshot.room_id, "m.room.member",
                requester.user_id,
            )  # fmt: skip
            if len(history) > 1:  # they were in the room before this leave
                return Access(snapshot, False, row.position)
        raise ApiError(Errcode.FORBIDDEN, "You are not allowed to read this room")

    async def _state_ids(self, access: Access) -> dict[tuple[str, str], EventId]:
        if access.current:
            return {k: e.event_id for k, e in access.snapshot.state.items()}
        rows = await self._db.run_read(
            "state_before", timeline.state_before, access.snapshot.room_id,
            list(access.snapshot.state), access.upto + 1,
        )  # fmt: skip
        return {k: r.event_id for k, r in rows.items()}

    # ------------------------------------------------------------------ state and members

    async def state(self, requester: Requester, room_id: str) -> list[dict[str, Any]]:
        access = await self.access(requester, room_id)
        ids = await self._state_ids(access)
        loaded = await self._loader.load(access.snapshot.room_id, list(ids.values()), requester)
        return [loaded[i] for i in ids.values() if i in loaded]

    async def state_event(
        self, requester: Requester, room_id: str, event_type: str, state_key: str
    ) -> dict[str, Any]:
        access = await self.access(requester, room_id)
        if access.current:
            event = access.snapshot.state.get((event_type, state_key))
            if event is None:
                raise ApiError(Errcode.NOT_FOUND, "No such state event")
            event_id = event.event_id
        else:
            rows = await self._db.run_read(
                "state_before", timeline.state_before, access.snapshot.room_id,
                [(event_type, state_key)], access.upto + 1,
            )  # fmt: skip
            row = rows.get((event_type, state_key))
            if row is None:
                raise ApiError(Errcode.NOT_FOUND, "No such state event")
            event_id = row.event_id
        loaded = await self._loader.load(access.snapshot.room_id, [event_id], requester)
        if event_id not in loaded:
            raise ApiError(Errcode.NOT_FOUND, "No such state event")
        content: dict[str, Any] = loaded[event_id]["content"]
        return content

    async def members(
        self,
        requester: Requester,
        room_id: str,
        membership: str | None,
        not_membership: str | None,
    ) -> list[dict[str, Any]]:
        access = await self.access(requester, room_id)
        ids = await self._state_ids(access)
        member_ids = [eid for (kind, _), eid in ids.items() if kind == "m.room.member"]
        loaded = await self._loader.load(access.snapshot.room_id, member_ids, requester)
        chunk = []
        for event_id in member_ids:
            event = loaded.get(event_id)
            if event is None:
                continue
            value = event["content"].get("membership")
            if membership is not None and value != membership:
                continue
            if not_membership is not None and value == not_membership:
                continue
            chunk.append(event)
        return chunk

    async def joined_members(self, requester: Requester, room_id: str) -> dict[str, Any]:
        access = await self.access(requester, room_id)
        if not access.current:
            raise ApiError(Errcode.FORBIDDEN, "You are not in this room")
        joined: dict[str, Any] = {}
        for (kind, key), event in access.snapshot.state.items():
            if kind == "m.room.member" and event.membership == "join":
                profile: dict[str, Any] = {}
                name = event.content.get("displayname")
                avatar = event.content.get("avatar_url")
                if isinstance(name, str):
                    profile["display_name"] = name
                if isinstance(avatar, str):
                    profile["avatar_url"] = avatar
                joined[key] = profile
        return joined

    async def joined_rooms(self, requester: Requester) -> list[RoomId]:
        rows = await self._db.run_read(
            "user_memberships", timeline.user_memberships, requester.user_id
        )
        return sorted(r.room_id for r in rows if r.membership == "join")

    # ------------------------------------------------------------------ events

    async def event(self, requester: Requester, room_id: str, event_id: str) -> dict[str, Any]:
        snapshot = await self._snapshot(room_id)
        rows = await self._rows_for_ids(snapshot.room_id, [EventId(event_id)])
        visible = await self._visible(snapshot.room_id, requester.user_id, rows)
        if not visible:
            raise ApiError(Errcode.NOT_FOUND, "Event not found")
        loaded = await self._loader.load(snapshot.room_id, [EventId(event_id)], requester)
        if event_id not in loaded:
            raise ApiError(Errcode.NOT_FOUND, "Event not found")
        return loaded[EventId(event_id)]

    async def _rows_for_ids(
        self, room_id: RoomId, event_ids: Sequence[EventId]
    ) -> list[timeline.StreamRow]:
        stored = await self._loader.stored(room_id, event_ids)
        return [
            timeline.StreamRow(e.stream_ordering, e.event_id, e.type, e.sender, e.state_key)
            for e in stored.values()
            if e.status.value == "timeline"
        ]

    async def _page(
        self,
        room_id: RoomId,
        user_id: UserId,
        *,
        position: int,
        backwards: bool,
        bound: int | None,
        limit: int,
        flt: RoomEventFilter | None,
    ) -> tuple[list[StoredEvent], int | None]:
        """Up to ``limit`` visible, matching events from ``position`` (read from the room's
        file, so a page sees every committed event, even one ``/sync`` does not show yet); and
        where to continue (``None`` when nothing is left)."""
        store = await self._cache.manager.get(room_id)
        if store is None:
            raise ApiError(Errcode.NOT_FOUND, "Unknown room")
        out: list[StoredEvent] = []
        cursor = position
        for _ in range(MAX_PAGE_SCAN):
            remaining = limit - len(out)
            want = min(remaining + 1, MAX_LIMIT)
            if backwards:
                raw = await store.events_upto(cursor, want) if cursor > 0 else []
                in_bound = [e for e in raw if bound is None or e.stream_ordering > bound]
            else:
                raw = await store.events_after(cursor, want)
                in_bound = [e for e in raw if bound is None or e.stream_ordering <= bound]
            more = len(in_bound) > remaining  # one beyond this page exists within the bound
            taken = in_bound[:remaining]
            if taken:
                last = taken[-1].stream_ordering
                cursor = last - 1 if backwards else last
            if flt is not None and not flt.allows_every_event:
                taken = [e for e in taken if flt.allows(e.type, e.sender)]
            out.extend(await self._visible_events(room_id, user_id, taken))
            if not more:
                return out, None
            if len(out) >= limit:
                return out, cursor
        return out, cursor

    async def _visible_events(
        self, room_id: RoomId, user_id: UserId, events: Sequence[StoredEvent]
    ) -> list[StoredEvent]:
        if not events:
            return []
        view = await self.visibility(room_id, user_id)
        return [e for e in events if view.can_see(e.stream_ordering, e.type, e.state_key, user_id)]

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        direction: str,
        limit: int,
        flt: RoomEventFilter | None,
    ) -> dict[str, Any]:
        if direction not in ("b", "f"):
            raise ApiError(Errcode.INVALID_PARAM, "dir must be b or f")
        snapshot = await self._snapshot(room_id)
        backwards = direction == "b"
        if from_token is None:
            position = self._positions.last_allocated if backwards else 0
        else:
            position = token_position(from_token)
        bound = token_position(to_token) if to_token is not None else None
        await self._check_member_ever(requester, snapshot)
        events, next_position = await self._page(
            snapshot.room_id, requester.user_id, position=position, backwards=backwards,
            bound=bound, limit=limit, flt=flt,
        )  # fmt: skip
        chunk = await self._loader.format(snapshot.room_id, events, requester)
        if flt is not None and flt.contains_url is not None:
            chunk = [e for e in chunk if flt.allows_event(e)]
        body: dict[str, Any] = {"chunk": chunk, "start": str(TopologicalToken(0, position))}
        if next_position is not None:
            body["end"] = str(TopologicalToken(0, next_position))
        if flt is not None and flt.lazy_load_members and chunk:
            senders = {e["sender"] for e in chunk}
            ids = [
                e.event_id
                for (kind, key), e in snapshot.state.items()
                if kind == "m.room.member" and key in senders
            ]
            members = await self._loader.load(snapshot.room_id, ids, requester)
            body["state"] = list(members.values())
        return body

    async def _check_member_ever(self, requester: Requester, snapshot: RoomSnapshot) -> None:
        if snapshot.membership(requester.user_id) is not None:
            return
        hv = snapshot.content("m.room.history_visibility") or {}
        if hv.get("history_visibility") != "world_readable":
            raise ApiError(Errcode.FORBIDDEN, "You are not allowed to read this room")

    async def context(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        limit: int,
        flt: RoomEventFilter | None,
    ) -> dict[str, Any]:
        snapshot = await self._snapshot(room_id)
        target = await self.event(requester, room_id, event_id)
        rows = await self._rows_for_ids(snapshot.room_id, [EventId(event_id)])
        if not rows:
            raise ApiError(Errcode.NOT_FOUND, "Event not found")
        position = rows[0].position
        before_n = limit // 2
        after_n = limit - before_n
        before: list[StoredEvent] = []
        after: list[StoredEvent] = []
        start, end = position - 1, position
        if before_n:
            before, more_b = await self._page(
                snapshot.room_id, requester.user_id, position=position - 1, backwards=True,
                bound=None, limit=before_n, flt=flt,
            )  # fmt: skip
            start = (
                more_b if more_b is not None else (before[-1].stream_ordering - 1 if before else 0)
            )
        if after_n:
            after, more_a = await self._page(
                snapshot.room_id, requester.user_id, position=position, backwards=False,
                bound=None, limit=after_n, flt=flt,
            )  # fmt: skip
            end = (
                more_a if more_a is not None else (after[-1].stream_ordering if after else position)
            )
        before_json = await self._loader.format(snapshot.room_id, before, requester)
        after_json = await self._loader.format(snapshot.room_id, after, requester)
        access = await self.access(requester, room_id)
        state_ids = await self._state_ids(access) if access.current else {}
        state = await self._loader.load(snapshot.room_id, list(state_ids.values()), requester)
        return {
            "event": target,
            "events_before": before_json,
            "events_after": after_json,
            "start": str(TopologicalToken(0, max(start, 0))),
            "end": str(TopologicalToken(0, end)),
            "state": list(state.values()),
        }
