"""``GET /sync`` (Client-Server API §"Syncing").

A sync token holds one position per stream (``cis.handlers.sync_tokens``); ``next_batch`` is
the token of the positions read. What a sync costs depends on what changed for the user, not on
the rooms of the node: the user's rooms come from the membership index (cached until a
membership event of theirs), and a joined room whose latest position (``StreamWatcher.latest``)
is not after the token is skipped without any read.

Per joined room:

- ``timeline``: the newest ``limit`` events after the token (filtered), oldest first, with
  ``limited`` when more happened, and ``prev_batch`` always (a valid ``/messages`` ``from``);
- ``state``: on an initial sync, a newly joined room or ``full_state``, the whole state *at the
  start of the timeline*; on an incremental sync whose timeline is ``limited``, the state
  changes that fell in the gap between the token and the timeline; never a timeline event;
- ``ephemeral``: typing (when it changed) and receipts (that changed);
- ``account_data``: the room's account data that changed.

Invites (``invite_state``: the stripped create, join rules, name, avatar, canonical alias,
encryption and topic, and the invite itself) show in the invitee's next sync; a room the user
left, was kicked or banned from, or whose invite they rejected, shows once under ``leave`` with
the events up to their leave and none after.

Long-polling: an incremental sync with nothing new waits up to ``timeout`` (at most 60 s) on
the notifier, registered *before* reading so nothing that lands meanwhile is missed; an initial
sync never waits. A token from the future (a restored node) is clamped to the current
positions, so a client never waits for positions that will not come.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cis.clock import Clock
from cis.handlers.account_data import AccountDataHandler
from cis.handlers.auth import Requester
from cis.handlers.client_events import STRIPPED_STATE_TYPES, stripped_event
from cis.handlers.e2e_keys import KeyCounts
from cis.handlers.event_loader import EventLoader
from cis.handlers.filters import Filter
from cis.handlers.notifier import Notifier
from cis.handlers.push_rules import PUSH_RULES_ACCOUNT_DATA_TYPE, push_rules_response
from cis.handlers.room_cache import RoomCache
from cis.handlers.stream_counters import StreamCounters
from cis.handlers.stream_watch import StreamWatcher
from cis.handlers.sync_tokens import StreamToken, TopologicalToken
from cis.handlers.typing import TypingHandler, typing_event
from cis.ids import DeviceId, EventId, RoomId, UserId
from cis.storage.client import timeline
from cis.storage.client.account_data import AccountDataStore
from cis.storage.client.e2e import E2eStore
from cis.storage.client.receipts import Receipt, ReceiptStore
from cis.storage.database import Database
from cis.storage.stream import StreamPositions

DEFAULT_TIMELINE_LIMIT: Final = 10
MAX_TIMEOUT_MS: Final = 60_000
MAX_TO_DEVICE_PER_SYNC: Final = 100
MAX_TRACKED_DEVICES: Final = 100_000


@dataclass(frozen=True, slots=True)
class SyncRequest:
    since: StreamToken | None
    timeout_ms: int
    full_state: bool
    filter: Filter


class SyncHandler:
    def __init__(
        self,
        *,
        cache: RoomCache,
        loader: EventLoader,
        node_db: Database,
        positions: StreamPositions,
        watcher: StreamWatcher,
        counters: StreamCounters,
        notifier: Notifier,
        typing: TypingHandler,
        receipts: ReceiptStore,
        account_data: AccountDataStore,
        account_data_handler: AccountDataHandler,
        e2e: E2eStore,
        key_counts: KeyCounts,
        clock: Clock,
    ) -> None:
        self._key_counts = key_counts
        self._cache = cache
        self._loader = loader
        self._db = node_db
        self._positions = positions
        self._watcher = watcher
        self._counters = counters
        self._notifier = notifier
        self._typing = typing
        self._receipts = receipts
        self._account_data = account_data
        self._account_data_handler = account_data_handler
        self._e2e = e2e
        self._clock = clock
        # Per device, the to-device position already acknowledged (deleted up to): a sync
        # from the same token again writes nothing.
        self._acked: dict[tuple[UserId, DeviceId], int] = {}
        self.remote_invite_state: (
            Callable[[RoomId, UserId], Awaitable[list[dict[str, Any]] | None]] | None
        ) = None
        """Set when the node federates: the stripped state of an invite to a room this node
        does not hold (``cis.handlers.federation_rooms``)."""

    def current_token(self) -> StreamToken:
        c = self._counters
        return StreamToken(
            events=self._positions.current,
            receipts=c.receipts,
            account_data=c.account_data,
            typing=self._typing.position,
            to_device=c.to_device,
            device_lists=c.device_lists,
        )

    async def sync(self, requester: Requester, request: SyncRequest) -> dict[str, Any]:
        since = request.since
        timeout = 0 if since is None else min(max(request.timeout_ms, 0), MAX_TIMEOUT_MS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout / 1000
        if since is not None:
            since = since.clamp(self.current_token())
        while True:
            rows = await self._watcher.memberships(requester.user_id)
            rooms = [r.room_id for r in rows if r.membership == "join"]
            with self._notifier.listen(requester.user_id, rooms) as listener:
                current = self.current_token()
                body, empty = await self._build(requester, request, since, current, rows)
                remaining = deadline - loop.time()
                if since is None or not empty or remaining <= 0 or request.full_state:
                    return body
                if not await listener.wait(remaining) or listener.superseded:
                    # Timed out (or made room for a newer poll, or the node is stopping): an
                    # empty answer with the same positions.
                    return body

    # ------------------------------------------------------------------ building

    async def _build(
        self,
        requester: Requester,
        request: SyncRequest,
        since: StreamToken | None,
        current: StreamToken,
        memberships: Sequence[timeline.MembershipRow],
    ) -> tuple[dict[str, Any], bool]:
        user = requester.user_id
        flt = request.filter
        joined: dict[str, Any] = {}
        invited: dict[str, Any] = {}
        left: dict[str, Any] = {}
        since_events = since.events if since is not None else 0
        forgotten: set[RoomId] | None = None
        room_account_data: dict[RoomId, list[dict[str, Any]]] = {}
        global_account_data: list[dict[str, Any]] = []
        if since is None or since.account_data < current.account_data:
            for entry in await self._account_data.since(
                user, since.account_data if since is not None else 0
            ):
                event = {"type": entry.type, "content": entry.content}
                if entry.room_id:
                    room_account_data.setdefault(RoomId(entry.room_id), []).append(event)
                elif flt.account_data.allows(entry.type, user):
                    global_account_data.append(event)
        has_rules = any(e["type"] == PUSH_RULES_ACCOUNT_DATA_TYPE for e in global_account_data)
        if (
            since is None
            and not has_rules
            and flt.account_data.allows(PUSH_RULES_ACCOUNT_DATA_TYPE, user)
        ):
            global_account_data.append(
                {"type": PUSH_RULES_ACCOUNT_DATA_TYPE, "content": push_rules_response(user)}
            )
        typing_changes = (
            self._typing.changed_rooms(
                [r.room_id for r in memberships if r.membership == "join"],
                since.typing if since is not None else 0,
            )
            if since is None or since.typing < current.typing
            else {}
        )
        receipts_by_room: dict[RoomId, list[Receipt]] = {}
        if since is None or since.receipts < current.receipts:
            joined_ids = [r.room_id for r in memberships if r.membership == "join"]
            for receipt in await self._receipts.since(
                joined_ids, since.receipts if since is not None else 0
            ):
                if receipt.stream_id <= current.receipts:
                    receipts_by_room.setdefault(receipt.room_id, []).append(receipt)

        for row in memberships:
            room_id = row.room_id
            if not flt.room.allows_room(room_id) or row.position > current.events:
                continue
            if row.membership == "join":
                changed = since is None or request.full_state or row.position > since_events
                changed = changed or self._watcher.latest(room_id) > since_events
                extra = (
                    room_id in typing_changes
                    or room_id in receipts_by_room
                    or room_id in room_account_data
                )
                if not changed and not extra:
                    continue
                section = await self._joined_room(
                    requester,
                    request=request,
                    room_id=room_id,
                    since=since,
                    current=current,
                    row=row,
                    load_timeline=changed,
                )
                ephemeral: list[dict[str, Any]] = []
                if room_id in typing_changes and flt.room.ephemeral.allows("m.typing", user):
                    ephemeral.append(dict(typing_event(typing_changes[room_id])))
                if room_id in receipts_by_room and flt.room.ephemeral.allows("m.receipt", user):
                    receipt_event = _receipt_event(receipts_by_room[room_id], user)
                    if receipt_event is not None:
                        ephemeral.append(receipt_event)
                section["ephemeral"] = {"events": ephemeral}
                section["account_data"] = {"events": room_account_data.get(room_id, [])}
                section.setdefault("unread_notifications", {})
                if (
                    section["timeline"]["events"]
                    or section["state"]["events"]
                    or ephemeral
                    or (section["account_data"]["events"])
                    or since is None
                    or row.position > since_events
                ):
                    joined[room_id] = section
            elif row.membership == "invite":
                if since is None or row.position > since_events:
                    invited[room_id] = await self._invite(requester, room_id, row)
            elif row.membership in ("leave", "ban"):
                if since is None and not flt.room.include_leave:
                    continue
                if since is not None and row.position <= since_events:
                    continue
                if forgotten is None:
                    forgotten = await self._db.run_read(
                        "forgotten_rooms", timeline.forgotten_rooms, user
                    )
                if room_id in forgotten:
                    continue
                left[room_id] = await self._left_room(requester, request, room_id, since, row)

        to_device, to_device_upto = await self._to_device(requester, since, current)
        device_lists = await self._device_lists(requester, since, current)
        counts, fallbacks = await self._key_counts.get(user, requester.device_id)
        next_token = StreamToken(
            events=current.events,
            receipts=current.receipts,
            account_data=current.account_data,
            typing=current.typing,
            to_device=to_device_upto,
            device_lists=current.device_lists,
        )
        counts.setdefault("signed_curve25519", 0)
        body: dict[str, Any] = {
            "next_batch": next_token.serialize(),
            "rooms": {"join": joined, "invite": invited, "leave": left, "knock": {}},
            "account_data": {"events": global_account_data},
            "presence": {"events": []},
            "to_device": {"events": to_device},
            "device_lists": device_lists,
            "device_one_time_keys_count": counts,
            "device_unused_fallback_key_types": fallbacks,
        }
        empty = not (
            joined
            or invited
            or left
            or global_account_data
            or to_device
            or device_lists["changed"]
            or device_lists["left"]
        )
        return body, empty

    # ------------------------------------------------------------------ rooms

    async def _timeline(
        self,
        requester: Requester,
        request: SyncRequest,
        room_id: RoomId,
        after: int,
        upto: int,
    ) -> tuple[list[timeline.StreamRow], bool]:
        flt = request.filter.room.timeline
        limit = flt.limit or DEFAULT_TIMELINE_LIMIT
        rows = self._watcher.recent_rows(room_id, after, upto, limit + 1)
        if rows is None:
            rows = await self._db.run_read(
                "room_events", timeline.room_events, room_id, after, upto, limit + 1,
                newest_first=True,
            )  # fmt: skip
        limited = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        if not flt.allows_everything:
            rows = [r for r in rows if flt.allows(r.type, r.sender)]
        return rows, limited

    async def _state_at(self, room_id: RoomId, before: int) -> dict[tuple[str, str], EventId]:
        """The room's state just before position ``before`` (keys of its current state)."""
        snapshot = await self._cache.get(room_id)
        if snapshot is None:
            return {}
        rows = await self._db.run_read(
            "state_before", timeline.state_before, room_id, list(snapshot.state), before
        )
        return {k: r.event_id for k, r in rows.items()}

    async def _room_section(
        self,
        requester: Requester,
        request: SyncRequest,
        room_id: RoomId,
        *,
        after: int,
        upto: int,
        full_state: bool,
    ) -> dict[str, Any]:
        rows, limited = await self._timeline(requester, request, room_id, after, upto)
        start = rows[0].position if rows else upto + 1
        state_flt = request.filter.room.state
        if full_state:
            state_ids = await self._state_at(room_id, start)
        elif limited:
            gap = await self._db.run_read(
                "state_changes", timeline.state_changes, room_id, after, start - 1
            )
            state_ids = {k: r.event_id for k, r in gap.items()}
        else:
            state_ids = {}
        timeline_ids = {r.event_id for r in rows}
        if state_flt.lazy_load_members:
            senders = {r.sender for r in rows} | {requester.user_id}
            state_ids = {
                k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders
            }
        state_list = [eid for eid in state_ids.values() if eid not in timeline_ids]
        ids = [r.event_id for r in rows] + state_list
        loaded = await self._loader.load(room_id, ids, requester, include_room_id=False)
        if not state_flt.allows_every_event:
            state_list = [
                e for e in state_list if e in loaded and state_flt.allows_event(loaded[e])
            ]
        project = request.filter.project
        prev = TopologicalToken(0, max(start - 1, 0))
        return {
            "timeline": {
                "events": [project(loaded[r.event_id]) for r in rows if r.event_id in loaded],
                "limited": limited,
                "prev_batch": prev.serialize(),
            },
            "state": {"events": [project(loaded[e]) for e in state_list if e in loaded]},
        }

    async def _joined_room(
        self,
        requester: Requester,
        *,
        request: SyncRequest,
        room_id: RoomId,
        since: StreamToken | None,
        current: StreamToken,
        row: timeline.MembershipRow,
        load_timeline: bool,
    ) -> dict[str, Any]:
        since_events = since.events if since is not None else 0
        newly_joined = since is not None and row.position > since_events
        if not load_timeline:
            prev = TopologicalToken(0, current.events)
            return {
                "timeline": {"events": [], "limited": False, "prev_batch": prev.serialize()},
                "state": {"events": []},
            }
        full = since is None or request.full_state or newly_joined
        after = 0 if (since is None or newly_joined) else since_events
        if since is not None and request.full_state and not newly_joined:
            after = since_events
        return await self._room_section(
            requester, request, room_id, after=after, upto=current.events, full_state=full
        )

    async def _left_room(
        self,
        requester: Requester,
        request: SyncRequest,
        room_id: RoomId,
        since: StreamToken | None,
        row: timeline.MembershipRow,
    ) -> dict[str, Any]:
        after = since.events if since is not None else max(row.position - 1, 0)
        section = await self._room_section(
            requester, request, room_id, after=after, upto=row.position,
            full_state=since is None,
        )  # fmt: skip
        section["account_data"] = {"events": []}
        return section

    async def _invite(
        self, requester: Requester, room_id: RoomId, row: timeline.MembershipRow
    ) -> dict[str, Any]:
        snapshot = await self._cache.get(room_id)
        events: list[dict[str, Any]] = []
        if snapshot is None and self.remote_invite_state is not None:
            remote = await self.remote_invite_state(room_id, requester.user_id)
            if remote is not None:
                return {"invite_state": {"events": remote}}
        if snapshot is not None:
            for kind in STRIPPED_STATE_TYPES:
                event = snapshot.state.get((kind, ""))
                if event is not None:
                    events.append(stripped_event(event.to_pdu()))
        invite = await self._loader.load(room_id, [row.event_id], requester)
        if row.event_id in invite:
            events.append(invite[row.event_id])
        return {"invite_state": {"events": events}}

    # ------------------------------------------------------------------ other streams

    async def _to_device(
        self, requester: Requester, since: StreamToken | None, current: StreamToken
    ) -> tuple[list[dict[str, Any]], int]:
        after = since.to_device if since is not None else 0
        device = (requester.user_id, requester.device_id)
        if after > self._acked.get(device, 0):
            # The client has seen everything up to its token: those are delivered.
            await self._e2e.delete_to_device(requester.user_id, requester.device_id, after)
            self._acked[device] = after
            if len(self._acked) > MAX_TRACKED_DEVICES:
                self._acked.clear()
        if since is not None and since.to_device >= current.to_device:
            return [], current.to_device
        messages = await self._e2e.to_device_since(
            requester.user_id, requester.device_id, after, current.to_device,
            MAX_TO_DEVICE_PER_SYNC,
        )  # fmt: skip
        events = [{"sender": m.sender, "type": m.type, "content": m.content} for m in messages]
        if len(messages) == MAX_TO_DEVICE_PER_SYNC:
            return events, messages[-1].stream_id  # the rest comes in the next sync
        return events, current.to_device

    async def _device_lists(
        self, requester: Requester, since: StreamToken | None, current: StreamToken
    ) -> dict[str, list[str]]:
        if since is None or since.device_lists >= current.device_lists:
            return {"changed": [], "left": []}
        changed = await self._e2e.device_list_changes(since.device_lists, current.device_lists)
        others = [u for u in changed if u != requester.user_id]
        sharing = await self._db.run_read(
            "rooms_sharing_with", timeline.rooms_sharing_with, requester.user_id, others
        )
        result = sorted(str(u) for u in sharing | ({requester.user_id} & changed))
        return {"changed": result, "left": []}


def _receipt_event(receipts: Sequence[Receipt], viewer: UserId) -> dict[str, Any] | None:
    """The ``m.receipt`` event of a room; private receipts only for their owner."""
    content: dict[str, dict[str, dict[str, Any]]] = {}
    for r in receipts:
        if r.receipt_type == "m.read.private" and r.user_id != viewer:
            continue
        data: dict[str, Any] = {"ts": r.ts}
        if r.thread_id:
            data["thread_id"] = r.thread_id
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = data
    return {"type": "m.receipt", "content": content} if content else None
