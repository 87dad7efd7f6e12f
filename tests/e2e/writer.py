"""A real process that writes events to a node's home and acknowledges each stored one.

Run as ``python -m tests.e2e.writer --home H`` from the repository root. It opens the node's
storage exactly as ``cis-node run`` does (lock, crash recovery, Room Store), creates a few rooms
the way a node does (``m.room.create``, the creator's join, power levels), then writes real
signed PDUs built with the Matrix core (``prepare_pdu`` on the room's forward extremities and
state, ``build_event`` with the node's key) from several concurrent tasks, single events and
batches, and prints ``ack <event_id>`` on stdout (flushed) for each event only after
``store_event(s)`` returned. The crash test kills it with SIGKILL and checks that every
acknowledged event survived.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field

from cis.config import load_config
from cis.home import Home
from cis.identity import NodeIdentity
from cis.ids import EventId
from cis.log import configure_logging
from cis.matrix import DEFAULT_ROOM_VERSION, Event, build_event, prepare_pdu
from cis.node import NodeStorage
from cis.storage.events import EventStatus
from cis.storage.rooms.store import RoomStore

ROOMS = ("!crash-a:alpha.cis.local", "!crash-b:alpha.cis.local", "!crash-c:alpha.cis.local")
USERS = ("@bob:alpha.cis.local", "@carol:beta.cis.local", "@dave:alpha.cis.local")


@dataclass(frozen=True, slots=True)
class Tip:
    event_id: EventId
    depth: int


@dataclass
class Room:
    store: RoomStore
    extremities: list[Tip] = field(default_factory=list)
    state: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        cited = set(event.prev_events)
        self.extremities = [t for t in self.extremities if t.event_id not in cited]
        self.extremities.append(Tip(event.event_id, event.depth))
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event.event_id


def ack(event_ids: list[EventId]) -> None:
    sys.stdout.write("".join(f"ack {event_id}\n" for event_id in event_ids))
    sys.stdout.flush()


class Author:
    """Builds events as the node's system user, signed with the node's key."""

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self.sender = identity.system_user_id

    def event(
        self,
        room: Room,
        event_type: str,
        content: dict[str, object],
        state_key: str | None = None,
    ) -> Event:
        partial = prepare_pdu(
            DEFAULT_ROOM_VERSION,
            room_id=room.store.room_id,
            sender=self.sender,
            event_type=event_type,
            content=content,
            origin_server_ts=time.time_ns() // 1_000_000,
            forward_extremities=room.extremities,
            current_state=room.state,
            state_key=state_key,
        )
        event = build_event(
            DEFAULT_ROOM_VERSION, partial, self.identity.server_name, self.identity.key_id,
            self.identity.signing_key,
        )  # fmt: skip
        room.add(event)
        return event


async def open_room(store: RoomStore, author: Author) -> Room:
    """Resume a room from what is stored, or create it as a node would."""
    room = Room(store)
    tips = await store.get_events(await store.forward_extremities())
    room.extremities = [Tip(e.event_id, e.depth) for e in tips.values()]
    room.state = dict(await store.current_state())
    if not room.state:
        creation = [
            author.event(room, "m.room.create", {}, ""),
            author.event(room, "m.room.member", {"membership": "join"}, author.sender),
            author.event(room, "m.room.power_levels", {"users": {author.sender: 100}}, ""),
        ]
        await store.store_events(creation)
        ack([e.event_id for e in creation])
    return room


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="stop after this many acks")
    args = parser.parse_args()
    configure_logging("warning")
    home = Home.resolve(args.home)
    storage = NodeStorage(home, load_config(home))
    await storage.open()
    author = Author(storage.identity)
    rooms = [await open_room(await storage.rooms.get_or_create(r), author) for r in ROOMS]
    rng = random.Random(os.getpid())
    acked = 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    async def worker(number: int) -> None:
        nonlocal acked
        sent = 0
        while not args.limit or acked < args.limit:
            room = rng.choice(rooms)
            size = rng.choice((1, 1, 1, 5, 20))
            events = []
            for _ in range(size):
                sent += 1
                tag = f"{os.getpid()}-{number}-{sent}"
                if rng.random() < 0.1:
                    membership = rng.choice(("join", "leave", "invite"))
                    content: dict[str, object] = {"membership": membership, "reason": tag}
                    events.append(author.event(room, "m.room.member", content, rng.choice(USERS)))
                else:
                    content = {"msgtype": "m.text", "body": f"message {tag}"}
                    events.append(author.event(room, "m.room.message", content))
            if size == 1:
                status = EventStatus.OUTLIER if rng.random() < 0.05 else EventStatus.TIMELINE
                await room.store.store_event(events[0], status=status)
            else:
                await room.store.store_events(events)
            ack([e.event_id for e in events])
            acked += len(events)

    try:
        await asyncio.gather(*(worker(i) for i in range(args.tasks)))
    finally:
        await storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
