from __future__ import annotations

import asyncio
import threading

import pytest

from cis.handlers.errors import RateLimited
from cis.handlers.passwords import (
    PasswordHasher,
    ScryptParams,
    hash_password_sync,
    verify_password_sync,
)

FAST = ScryptParams(log_n=8)


def test_hash_then_verify() -> None:
    stored = hash_password_sync("correct horse", FAST)
    assert stored.startswith("scrypt$8$8$1$")
    assert verify_password_sync("correct horse", stored)
    assert not verify_password_sync("correct horsE", stored)
    assert not verify_password_sync("", stored)


def test_salts_differ() -> None:
    assert hash_password_sync("pw", FAST) != hash_password_sync("pw", FAST)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$8$8$1$c2FsdA$a2V5",
        "scrypt$8$8$1$c2FsdA",
        "scrypt$x$8$1$c2FsdA$a2V5",
        "scrypt$40$8$1$c2FsdA$a2V5",  # absurd cost is refused, not computed
        "scrypt$8$8$1$!!!$a2V5",
        "scrypt$8$8$1$c2FsdA$",
    ],
)
def test_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password_sync("pw", stored)


async def test_hasher_runs_off_the_event_loop() -> None:
    hasher = PasswordHasher(FAST)
    loop_thread = threading.get_ident()
    seen: list[int] = []

    import cis.handlers.passwords as module

    original = module.verify_password_sync

    def spy(password: str, stored: str) -> bool:
        seen.append(threading.get_ident())
        return original(password, stored)

    module.verify_password_sync = spy  # type: ignore[assignment]
    try:
        stored = await hasher.hash("secret")
        assert await hasher.verify("secret", stored)
        assert not await hasher.verify("wrong", stored)
    finally:
        module.verify_password_sync = original  # type: ignore[assignment]
        hasher.close()
    assert seen and all(t != loop_thread for t in seen)


async def test_unknown_user_costs_a_hash_and_fails() -> None:
    hasher = PasswordHasher(FAST)
    try:
        assert not await hasher.verify("anything", None)
        # Even the dummy's own password cannot match a missing user.
        assert not await hasher.verify("", None)
    finally:
        hasher.close()


async def test_backlog_is_bounded() -> None:
    hasher = PasswordHasher(ScryptParams(log_n=12), threads=1, max_pending=2)
    try:
        tasks = [asyncio.create_task(hasher.hash("x")) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(RateLimited) as info:
            await hasher.hash("y")
        assert info.value.status == 429
        results = await asyncio.gather(*tasks)
        assert all(r.startswith("scrypt$") for r in results)
    finally:
        hasher.close()
