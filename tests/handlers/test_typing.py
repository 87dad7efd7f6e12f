from __future__ import annotations

import asyncio

from cis.clock import FakeClock, SystemClock
from cis.handlers.notifier import Notifier
from cis.handlers.typing import TypingHandler, typing_event
from cis.ids import RoomId, UserId

R = RoomId("!r:x")
S = RoomId("!s:x")
A = UserId("@a:x")
B = UserId("@b:x")


def test_positions_start_from_the_clock_and_grow() -> None:
    clock = FakeClock(start=1_700_000_000.0)
    typing = TypingHandler(clock, Notifier())
    start = typing.position
    assert start == 1_700_000_000_000
    typing.set_typing(R, A, True, 30_000)
    assert typing.position == start + 1
    typing.set_typing(R, A, True, 30_000)  # refresh: no change to report
    assert typing.position == start + 1
    typing.set_typing(R, B, True, 30_000)
    assert typing.typing_users(R) == [A, B]
    typing.set_typing(R, A, False, 0)
    assert typing.typing_users(R) == [B]
    assert typing.changed_rooms([R, S], start) == {R: [B]}
    assert typing.changed_rooms([R, S], typing.position) == {}
    # A restarted node starts above anything issued before.
    assert TypingHandler(FakeClock(start=1_700_000_001.0), Notifier()).position > typing.position


def test_expiry() -> None:
    clock = FakeClock()
    typing = TypingHandler(clock, Notifier())
    typing.set_typing(R, A, True, 5_000)
    typing.set_typing(R, B, True, 10**9)  # capped at two minutes
    clock.advance(5)
    assert typing.typing_users(R) == [B]
    before = typing.position
    assert typing.expire_due() == 1
    assert typing.position == before + 1
    clock.advance(120)
    assert typing.expire_due() == 1
    assert typing.typing_users(R) == []


async def test_changes_wake_the_room() -> None:
    notifier = Notifier()
    typing = TypingHandler(SystemClock(), notifier)
    with notifier.listen(A, [R]) as listener:
        typing.set_typing(R, B, True, 50)
        assert listener.woken
    with notifier.listen(A, [R]) as listener:
        # The timer fires after the timeout and reports B stopped typing.
        assert await listener.wait(2.0)
    assert typing.typing_users(R) == []
    typing.close()
    await asyncio.sleep(0)


def test_typing_event_shape() -> None:
    assert typing_event([A]) == {"type": "m.typing", "content": {"user_ids": [A]}}
