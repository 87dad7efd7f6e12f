from __future__ import annotations

import pytest

from cis.handlers.access_tokens import token_hash
from cis.ids import DeviceId, UserId
from cis.storage.client.accounts import AccountStore, TokenOwner, UserExists
from cis.storage.database import Database

A = UserId("@a:n.cis.local")
D1 = DeviceId("DEV1")
D2 = DeviceId("DEV2")


async def test_register_with_device_and_token(db: Database) -> None:
    store = AccountStore(db)
    h = token_hash("tok1")
    await store.register(
        user_id=A, password_hash="scrypt$x", device=(D1, "phone", h), now_ms=1000, ip="127.0.0.1"
    )
    user = await store.get_user(A)
    assert user is not None and user.password_hash == "scrypt$x" and not user.admin
    assert await store.token_owner(h) == TokenOwner(A, D1)
    assert await store.token_owner(token_hash("other")) is None
    with pytest.raises(UserExists):
        await store.register(user_id=A, password_hash=None, device=None, now_ms=1, ip=None)


async def test_login_reusing_a_device_replaces_its_token(db: Database) -> None:
    store = AccountStore(db)
    await store.create_user(A, "h", admin=True, now_ms=1)
    assert (await store.get_user(A)).admin  # type: ignore[union-attr]
    first, second = token_hash("t1"), token_hash("t2")
    created = await store.login_device(
        user_id=A, device_id=D1, display_name="x", token_hash=first, now_ms=2, ip=None
    )
    assert created
    again = await store.login_device(
        user_id=A, device_id=D1, display_name="y", token_hash=second, now_ms=3, ip="::1"
    )
    assert not again
    assert await store.token_owner(first) is None
    assert await store.token_owner(second) == TokenOwner(A, D1)
    device = await store.get_device(A, D1)
    assert device is not None and device.display_name == "x" and device.last_seen_ip == "::1"


async def test_devices_list_rename_delete(db: Database) -> None:
    store = AccountStore(db)
    await store.create_user(A, "h", admin=False, now_ms=1)
    for device, tok in ((D1, "t1"), (D2, "t2")):
        await store.login_device(
            user_id=A,
            device_id=device,
            display_name=None,
            token_hash=token_hash(tok),
            now_ms=1,
            ip=None,
        )
    assert [d.device_id for d in await store.list_devices(A)] == [D1, D2]
    assert await store.rename_device(A, D1, "laptop")
    assert not await store.rename_device(A, DeviceId("NOPE"), "x")
    assert (await store.get_device(A, D1)).display_name == "laptop"  # type: ignore[union-attr]
    deleted, hashes = await store.delete_devices(A, [D1, DeviceId("NOPE")])
    assert deleted == [D1] and hashes == [token_hash("t1")]
    assert await store.token_owner(token_hash("t1")) is None
    assert await store.token_owner(token_hash("t2")) is not None
    deleted, hashes = await store.delete_devices(A, None)
    assert deleted == [D2] and hashes == [token_hash("t2")]
    assert await store.list_devices(A) == []


async def test_profile_fields(db: Database) -> None:
    store = AccountStore(db)
    await store.create_user(A, None, admin=False, now_ms=1, displayname="Alice")
    await store.set_profile_field(A, "avatar_url", "mxc://n/x")
    user = await store.get_user(A)
    assert user is not None and user.displayname == "Alice" and user.avatar_url == "mxc://n/x"
    assert user.password_hash is None
    with pytest.raises(ValueError):
        await store.set_profile_field(A, "password_hash", "x")
    assert await store.list_users() == [A]
