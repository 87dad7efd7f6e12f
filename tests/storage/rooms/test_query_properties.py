"""Hypothesis: ``query_events`` agrees with a plain-Python model on every filter and page."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cis.clock import FakeClock
from cis.home import Home
from cis.ids import EventId
from cis.storage.events import EventStatus, StoredEvent
from cis.storage.node_store import NodeStore
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.types import Direction, EventFilter, Pagination
from cis.storage.stream import StreamPositions
from tests.factories import make_event

ROOM = "!query:alpha.cis.local"
TYPES = ("m.room.message", "m.reaction", "cis.dag.run", "m.room.topic")
SENDERS = ("@alice:alpha.cis.local", "@bob:alpha.cis.local", "@carol:beta.cis.local")
WORDS = ("alpha", "Alpha", "beta", "gamma δ", "ünï", "50%", "a_b", "")


@dataclass
class Dataset:
    runner: asyncio.Runner
    store: RoomStore
    events: list[StoredEvent]  # every stored event, in stream order


def _content(rng: random.Random) -> dict[str, Any]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]
    shape = rng.randint(0, 3)
    if shape == 0:
        return {"body": " ".join(words)}
    if shape == 1:
        return {"body": rng.choice(WORDS), "alpha": 1}  # a key that looks like a word
    if shape == 2:
        return {"nested": {"list": words, "n": rng.randint(0, 9)}}
    return {}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    root = tmp_path_factory.mktemp("query-props")
    home = Home(root)
    node = NodeStore.open(home, create=True)
    runner = asyncio.Runner()
    manager = RoomStoreManager(
        home, node, StreamPositions(0), clock=FakeClock(), max_open_rooms=2,
    )  # fmt: skip
    rng = random.Random(20240601)

    async def fill() -> RoomStore:
        store = await manager.get_or_create(ROOM)
        for i in range(160):
            event = make_event(
                ROOM,
                type=rng.choice(TYPES),
                sender=rng.choice(SENDERS),
                ts=rng.randint(0, 50),
                content=_content(rng) | {"i": i},
            )
            status = rng.choice([EventStatus.TIMELINE] * 4 + list(EventStatus))
            await store.store_event(event, status=status)
        return store

    store = runner.run(fill())
    page = runner.run(
        store.query_events(EventFilter(statuses=tuple(EventStatus)), Pagination(limit=1000))
    )
    yield Dataset(runner, store, list(page.events))
    runner.run(manager.close())
    runner.close()
    node.close()


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _matches(event: StoredEvent, flt: EventFilter) -> bool:
    return (
        event.status in flt.statuses
        and (flt.types is None or event.type in flt.types)
        and (flt.senders is None or event.sender in flt.senders)
        and (flt.since is None or event.origin_server_ts >= flt.since)
        and (flt.until is None or event.origin_server_ts <= flt.until)
        and (flt.contains is None or any(flt.contains in s for s in _strings(event.content)))
    )


filters = st.builds(
    EventFilter,
    types=st.none() | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3).map(tuple),
    senders=st.none() | st.lists(st.sampled_from(SENDERS), min_size=1, max_size=2).map(tuple),
    since=st.none() | st.integers(0, 55),
    until=st.none() | st.integers(0, 55),
    contains=st.none() | st.sampled_from([w for w in WORDS if w] + ["lph", "ü", "%", "zzz"]),
    statuses=st.lists(st.sampled_from(list(EventStatus)), min_size=1, max_size=4).map(tuple),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    flt=filters,
    limit=st.integers(1, 40),
    direction=st.sampled_from(list(Direction)),
    cursors=st.tuples(st.none() | st.integers(0, 159), st.none() | st.integers(0, 159)),
)
def test_query_events_matches_the_model(
    dataset: Dataset,
    flt: EventFilter,
    limit: int,
    direction: Direction,
    cursors: tuple[int | None, int | None],
) -> None:
    events = dataset.events
    after_i, before_i = cursors
    after = events[after_i] if after_i is not None else None
    before = events[before_i] if before_i is not None else None
    expected = [
        e
        for e in events
        if _matches(e, flt)
        and (after is None or e.stream_ordering > after.stream_ordering)
        and (before is None or e.stream_ordering < before.stream_ordering)
    ]
    if direction is Direction.BACKWARDS:
        expected.reverse()
    page = dataset.runner.run(
        dataset.store.query_events(
            flt,
            Pagination(
                limit=limit,
                after=after.event_id if after else None,
                before=before.event_id if before else None,
                direction=direction,
            ),
        )
    )
    assert [e.event_id for e in page.events] == [e.event_id for e in expected[:limit]]
    assert page.has_more == (len(expected) > limit)


@settings(max_examples=40, deadline=None)
@given(flt=filters, limit=st.integers(1, 25), direction=st.sampled_from(list(Direction)))
def test_paging_through_visits_every_match_once(
    dataset: Dataset, flt: EventFilter, limit: int, direction: Direction
) -> None:
    seen: list[EventId] = []
    cursor: EventId | None = None
    for _ in range(200):
        if direction is Direction.FORWARDS:
            page_args = Pagination(limit=limit, after=cursor, direction=direction)
        else:
            page_args = Pagination(limit=limit, before=cursor, direction=direction)
        page = dataset.runner.run(dataset.store.query_events(flt, page_args))
        seen.extend(e.event_id for e in page.events)
        if not page.has_more:
            break
        cursor = page.last_event_id
    expected = [e.event_id for e in dataset.events if _matches(e, flt)]
    if direction is Direction.BACKWARDS:
        expected.reverse()
    assert seen == expected


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Named, not a multi-line lambda, which Hypothesis misreads as not using its argument.
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=8), children, max_size=3
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    _nest,
    max_leaves=12,
)


@settings(max_examples=30, deadline=None)
@given(contents=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=6))
def test_jsonl_round_trip_keeps_every_byte(
    dataset: Dataset, tmp_path_factory: pytest.TempPathFactory, contents: list[dict[str, Any]]
) -> None:
    """Any content survives export and import byte for byte (canonical JSON, UTF-8)."""
    folder: Path = tmp_path_factory.mktemp("jsonl")
    home = Home(folder)
    node = NodeStore.open(home, create=True)
    manager = RoomStoreManager(
        home, node, StreamPositions(0), clock=FakeClock(), max_open_rooms=2,
    )  # fmt: skip
    room_id = "!jsonl:alpha.cis.local"

    async def round_trip() -> tuple[list[bytes], list[bytes]]:
        source = await manager.get_or_create(room_id)
        events = [make_event(room_id, content=c, ts=i) for i, c in enumerate(contents)]
        await source.store_events(events)
        await source.export_to_jsonl(folder / "out.jsonl")
        await manager.archive_room(room_id)
        target = await manager.get_or_create("!jsonl2:alpha.cis.local")
        lines = (folder / "out.jsonl").read_bytes().replace(b"!jsonl:", b"!jsonl2:")
        (folder / "in.jsonl").write_bytes(lines)
        await target.import_from_jsonl(folder / "in.jsonl")
        page = await target.query_events(EventFilter(), Pagination(limit=100))
        originals = [e.canonical_bytes.replace(b"!jsonl:", b"!jsonl2:") for e in events]
        return originals, [e.canonical_bytes for e in page.events]

    try:
        originals, imported = dataset.runner.run(round_trip())
        assert sorted(imported) == sorted(set(originals))
    finally:
        dataset.runner.run(manager.close())
        node.close()
