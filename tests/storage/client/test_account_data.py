from __future__ import annotations

import pytest

from cis.ids import RoomId, UserId
from cis.storage.client.account_data import MAX_FILTERS_PER_USER, AccountDataStore, AliasTaken
from cis.storage.client.receipts import ReceiptStore
from cis.storage.database import Database

A = UserId("@a:x")
B = UserId("@b:x")
R = RoomId("!r:x")


async def test_account_data_positions(db: Database) -> None:
    store = AccountDataStore(db)
    assert await store.position() == 0
    p1 = await store.put(A, None, "m.direct", {"@b:x": ["!r:x"]})
    p2 = await store.put(A, R, "m.tag", {"tags": {}})
    p3 = await store.put(A, None, "m.direct", {})
    assert p1 < p2 < p3 == await store.position()
    assert await store.get(A, None, "m.direct") == {}
    assert await store.get(A, R, "m.tag") == {"tags": {}}
    assert await store.get(B, None, "m.direct") is None
    changed = await store.since(A, p1)
    assert [(e.room_id, e.type) for e in changed] == [("!r:x", "m.tag"), ("", "m.direct")]
    assert await store.since(A, p3) == []


async def test_filters_dedupe_and_bound(db: Database) -> None:
    store = AccountDataStore(db)
    first = await store.add_filter(A, {"room": {"timeline": {"limit": 1}}})
    assert await store.add_filter(A, {"room": {"timeline": {"limit": 1}}}) == first
    assert await store.get_filter(A, first) == {"room": {"timeline": {"limit": 1}}}
    assert await store.get_filter(B, first) is None
    ids = [await store.add_filter(A, {"n": i}) for i in range(MAX_FILTERS_PER_USER + 5)]
    assert await store.get_filter(A, ids[-1]) == {"n": MAX_FILTERS_PER_USER + 4}
    assert await store.get_filter(A, first) is None  # the oldest were dropped
    kept = [i for i in ids if await store.get_filter(A, i) is not None]
    assert len(kept) <= MAX_FILTERS_PER_USER


async def test_aliases(db: Database) -> None:
    store = AccountDataStore(db)
    await store.add_alias("#a:x", R, A, 1)
    with pytest.raises(AliasTaken):
        await store.add_alias("#a:x", RoomId("!s:x"), A, 2)
    assert await store.get_alias("#a:x") == (R, A)
    assert await store.room_aliases(R) == ["#a:x"]
    assert await store.delete_alias("#a:x")
    assert not await store.delete_alias("#a:x")
    assert await store.get_alias("#a:x") is None


async def test_receipts_replace_and_advance(db: Database) -> None:
    from cis.ids import EventId

    store = ReceiptStore(db)
    p1 = await store.put(
        room_id=R, receipt_type="m.read", user_id=A, thread_id="", event_id=EventId("$1"), ts=5
    )
    p2 = await store.put(
        room_id=R, receipt_type="m.read", user_id=A, thread_id="", event_id=EventId("$2"), ts=6
    )
    assert p2 > p1 and await store.position() == p2
    rows = await store.since([R], 0)
    assert [(r.event_id, r.stream_id) for r in rows] == [("$2", p2)]
    assert await store.since([R], p2) == []
    assert await store.since([], 0) == []
