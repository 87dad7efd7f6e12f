from __future__ import annotations

import sqlite3

from cis.ids import DeviceId, UserId
from cis.storage.client.accounts import AccountStore
from cis.storage.client.e2e import MAX_TO_DEVICE_PER_DEVICE, E2eStore, queue_to_device_txn
from cis.storage.database import Database

A = UserId("@a:x")
B = UserId("@b:x")
DA = DeviceId("ADEV")
DB = DeviceId("BDEV")


async def setup(db: Database) -> E2eStore:
    accounts = AccountStore(db)
    for user, device in ((A, DA), (B, DB)):
        await accounts.create_user(user, "h", admin=False, now_ms=1)
        await accounts.login_device(
            user_id=user,
            device_id=device,
            display_name=f"{user} phone",
            token_hash=user.encode(),
            now_ms=1,
            ip=None,
        )
    return E2eStore(db)


async def test_upload_query_claim(db: Database) -> None:
    store = await setup(db)
    keys = {
        "user_id": A,
        "device_id": DA,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {"ed25519:ADEV": "k1"},
        "signatures": {},
    }
    otks = {("signed_curve25519", f"AAA{i}"): {"key": f"otk{i}"} for i in range(3)}
    counts = await store.upload(A, DA, keys, otks, {("signed_curve25519", "FB"): {"key": "fb"}})
    assert counts == {"signed_curve25519": 3}
    position = await store.device_list_position()
    assert position > 0
    # The same device keys again are not a change.
    await store.upload(A, DA, keys, {}, {})
    assert await store.device_list_position() == position
    assert await store.device_list_changes(0, position) == {A}

    found = await store.query({A: [], B: []})
    assert found[B] == {}
    assert found[A][DA]["keys"] == {"ed25519:ADEV": "k1"}
    assert found[A][DA]["unsigned"] == {"device_display_name": "@a:x phone"}
    assert (await store.query({A: [DeviceId("OTHER")]}))[A] == {}

    claimed = [await store.claim({A: {DA: "signed_curve25519"}}) for _ in range(4)]
    handed = [next(iter(c[A][DA])) for c in claimed]
    assert handed[:3] == [
        "signed_curve25519:AAA0",
        "signed_curve25519:AAA1",
        "signed_curve25519:AAA2",
    ]
    assert handed[3] == "signed_curve25519:FB"  # then the fallback key
    assert await store.one_time_key_counts(A, DA) == {}
    counts, fallbacks = await store.key_counts_and_fallbacks(A, DA)
    assert counts == {} and fallbacks == []  # the fallback was used
    assert await store.claim({B: {DB: "signed_curve25519"}}) == {}


async def test_to_device_queue(db: Database) -> None:
    store = await setup(db)
    last = await store.queue_to_device(
        A, "m.room_key_request", [(B, DB, {"n": 1}), (B, DB, {"n": 2})]
    )
    assert await store.to_device_position() == last
    got = await store.to_device_since(B, DB, 0, last, 100)
    assert [m.content for m in got] == [{"n": 1}, {"n": 2}]
    assert got[0].sender == A and got[0].type == "m.room_key_request"
    assert await store.to_device_since(A, DA, 0, last, 100) == []
    assert await store.delete_to_device(B, DB, got[0].stream_id) == 1
    assert [m.content for m in await store.to_device_since(B, DB, 0, last, 100)] == [{"n": 2}]


async def test_to_device_queue_is_bounded(db: Database) -> None:
    await setup(db)
    batch = [(B, DB, {"n": i}) for i in range(60)]

    def txn(conn: sqlite3.Connection) -> int:
        return queue_to_device_txn(
            conn, sender=A, event_type="x", messages=batch, max_per_device=50
        )

    last = await db.run_interaction("queue", txn)  # type: ignore[arg-type]
    pending = await E2eStore(db).to_device_since(B, DB, 0, last, 1000)
    assert len(pending) == 50
    assert pending[0].content == {"n": 10} and pending[-1].content == {"n": 59}
    assert MAX_TO_DEVICE_PER_DEVICE >= 1000


async def test_deleting_a_device_drops_its_keys(db: Database) -> None:
    store = await setup(db)
    await store.upload(A, DA, {"keys": {}}, {("alg", "k"): "plain"}, {})
    await AccountStore(db).delete_devices(A, [DA])
    assert (await store.query({A: []}))[A] == {}
    assert await store.one_time_key_counts(A, DA) == {}
