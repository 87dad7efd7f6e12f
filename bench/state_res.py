"""Benchmark of state resolution v2 (``cis.matrix.state_res.resolve_state``).

A fixed generator builds one room: Alice creates it (public, power levels Alice 100, a
moderator 50) and N members join. Two forks then make N/10 state changes each, cycling
through power levels (a level of one of 20 members), the topic, and a membership (fork A:
Alice kicks a member; fork B: the moderator bans another). Every event is checked against the
auth rules on its branch as it is built. The two forks' states are then resolved; N/10 keys
per fork conflict and every power levels event of both forks is in the auth difference.

Run:  .venv/bin/python bench/state_res.py [N ...]      (default: 1000 10000 100000)

It times the resolution twice: with the event map as ``Event`` objects, and as PDU dicts with
an ``event_id`` key (as they arrive over federation). Generation is not timed.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from typing import Any

from cis.ids import EventId
from cis.matrix import Event, check_auth, parse_pdu, resolve_state
from cis.matrix.auth import auth_types_for
from cis.matrix.events import StateKey

RV = "11"
ROOM = "!bench:a.test"
ALICE = "@alice:a.test"
MOD = "@mod:a.test"
POOL = 20  # members whose power level the forks change


def user(i: int) -> str:
    return f"@u{i}:s{i % 16}.test"


class Builder:
    """Builds a branch of the room: events with their auth events from the branch's state."""

    def __init__(self, events: dict[EventId, Event], clock: list[int]) -> None:
        self.events = events
        self.clock = clock
        self.state: dict[StateKey, EventId] = {}
        self.tip: Event | None = None

    def fork(self) -> Builder:
        other = Builder(self.events, self.clock)
        other.state, other.tip = dict(self.state), self.tip
        return other

    def send(
        self, sender: str, event_type: str, content: dict[str, Any], state_key: str | None
    ) -> Event:
        self.clock[0] += 1
        auth = sorted(auth_types_for(event_type, state_key, sender, content))
        pdu: dict[str, Any] = {
            "room_id": ROOM,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": self.clock[0],
            "depth": self.tip.depth + 1 if self.tip else 1,
            "prev_events": [self.tip.event_id] if self.tip else [],
            "auth_events": [self.state[k] for k in auth if k in self.state],
            "hashes": {"sha256": "not-checked-by-state-resolution"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        event = parse_pdu(RV, pdu)
        check_auth(RV, event, {k: self.events[self.state[k]] for k in auth if k in self.state})
        self.events[event.event_id] = event
        if state_key is not None:
            self.state[(event_type, state_key)] = event.event_id
        self.tip = event
        return event


def build(n: int) -> tuple[dict[EventId, Event], list[dict[StateKey, EventId]]]:
    events: dict[EventId, Event] = {}
    base = Builder(events, [0])
    base.send(ALICE, "m.room.create", {"room_version": RV}, "")
    base.send(ALICE, "m.room.member", {"membership": "join"}, ALICE)
    base.send(ALICE, "m.room.power_levels", {"users": {ALICE: 100, MOD: 50}}, "")
    base.send(ALICE, "m.room.join_rules", {"join_rule": "public"}, "")
    base.send(MOD, "m.room.member", {"membership": "join"}, MOD)
    for i in range(n):
        base.send(user(i), "m.room.member", {"membership": "join"}, user(i))

    a, b = base.fork(), base.fork()
    changes = max(3, n // 10)
    for step in range(changes):
        kind = step % 3
        if kind == 0:
            levels_a = {user(j): (step + j) % 40 for j in range(POOL)}
            a.send(ALICE, "m.room.power_levels", {"users": {ALICE: 100, MOD: 50, **levels_a}}, "")
            levels_b = {user(j): (step * 3 + j) % 50 for j in range(POOL, 2 * POOL)}
            b.send(MOD, "m.room.power_levels", {"users": {ALICE: 100, MOD: 50, **levels_b}}, "")
        elif kind == 1:
            a.send(ALICE, "m.room.topic", {"topic": f"A {step}"}, "")
            b.send(MOD, "m.room.topic", {"topic": f"B {step}"}, "")
        else:
            target_a = user(2 * POOL + step // 3)
            a.send(ALICE, "m.room.member", {"membership": "leave"}, target_a)
            target_b = user(n - 1 - step // 3)
            b.send(MOD, "m.room.member", {"membership": "ban"}, target_b)
    return events, [a.state, b.state]


def timed(states: list[dict[StateKey, EventId]], event_map: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = resolve_state(RV, states, event_map)
    return time.perf_counter() - start, result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="*", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    print(f"# Python {platform.python_version()} on {platform.machine()}, room version {RV}")
    print(f"{'N':>8} {'events':>8} {'conflicted':>10} {'Event objects':>14} {'PDU dicts':>10}")
    for n in args.n:
        events, states = build(n)
        keys = set(states[0]) | set(states[1])
        conflicted = sum(1 for k in keys if states[0].get(k) != states[1].get(k))
        dicts = {eid: {**e.to_pdu(), "event_id": eid} for eid, e in events.items()}
        best_obj = best_dict = float("inf")
        results = []
        for _ in range(args.repeat):
            t, r1 = timed(states, events)
            best_obj = min(best_obj, t)
            t, r2 = timed(states, dicts)
            best_dict = min(best_dict, t)
            results += [r1, r2]
        assert all(r == results[0] for r in results), "resolution is not deterministic"
        print(f"{n:>8} {len(events):>8} {conflicted:>10} {best_obj:>13.3f}s {best_dict:>9.3f}s")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
