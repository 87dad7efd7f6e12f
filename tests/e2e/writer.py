"""A real process that writes events to a node's home and acknowledges each stored one.

Run as ``python -m tests.e2e.writer --home H`` from the repository root. It opens the node's
storage exactly as ``cis-node run`` does (lock, crash recovery, Room Store), then writes events
into a few rooms from several concurrent tasks, single events and batches, and prints
``ack <event_id>`` on stdout (flushed) for each event only after ``store_event(s)`` returned.
The crash test kills it with SIGKILL and checks every acknowledged event survived.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys

from cis.config import load_config
from cis.home import Home
from cis.ids import EventId
from cis.log import configure_logging
from cis.node import NodeStorage
from cis.storage.events import EventStatus
from tests.factories import make_event, parse_fake_pdu

ROOMS = ("!crash-a:alpha.cis.local", "!crash-b:alpha.cis.local", "!crash-c:alpha.cis.local")
USERS = ("@bob:alpha.cis.local", "@carol:beta.cis.local", "@dave:alpha.cis.local")


def ack(event_ids: list[EventId]) -> None:
    sys.stdout.write("".join(f"ack {event_id}\n" for event_id in event_ids))
    sys.stdout.flush()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="stop after this many acks")
    args = parser.parse_args()
    configure_logging("warning")
    home = Home.resolve(args.home)
    storage = NodeStorage(home, load_config(home), pdu_parser=parse_fake_pdu)
    await storage.open()
    stores = [await storage.rooms.get_or_create(room_id) for room_id in ROOMS]
    heads = {s.room_id: tuple(await s.forward_extremities()) for s in stores}
    rng = random.Random(os.getpid())
    counter = 0
    acked = 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    async def worker(number: int) -> None:
        nonlocal counter, acked
        while not args.limit or acked < args.limit:
            store = rng.choice(stores)
            size = rng.choice((1, 1, 1, 5, 20))
            events = []
            for _ in range(size):
                counter += 1
                tag = f"{os.getpid()}-{number}-{counter}"
                if rng.random() < 0.1:
                    user = rng.choice(USERS)
                    membership = rng.choice(("join", "leave", "invite"))
                    event = make_event(
                        store.room_id, type="m.room.member", state_key=user,
                        content={"membership": membership, "tag": tag},
                        prev_events=heads[store.room_id],
                    )  # fmt: skip
                else:
                    event = make_event(
                        store.room_id, content={"body": f"message {tag}"},
                        prev_events=heads[store.room_id],
                    )  # fmt: skip
                heads[store.room_id] = (event.event_id,)
                events.append(event)
            if size == 1:
                status = EventStatus.OUTLIER if rng.random() < 0.05 else EventStatus.TIMELINE
                await store.store_event(events[0], status=status)
            else:
                await store.store_events(events)
            ack([e.event_id for e in events])
            acked += len(events)

    try:
        await asyncio.gather(*(worker(i) for i in range(args.tasks)))
    finally:
        await storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
