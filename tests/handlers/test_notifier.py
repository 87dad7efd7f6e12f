from __future__ import annotations

import asyncio

from cis.handlers.notifier import Notifier
from cis.ids import RoomId, UserId

A = UserId("@a:x")
B = UserId("@b:x")
R1 = RoomId("!1:x")
R2 = RoomId("!2:x")


async def test_room_event_wakes_only_that_rooms_listeners() -> None:
    notifier = Notifier()
    with notifier.listen(A, [R1]) as in_r1, notifier.listen(B, [R2]) as in_r2:
        waits = [asyncio.create_task(in_r1.wait(5)), asyncio.create_task(in_r2.wait(0.2))]
        await asyncio.sleep(0)
        assert notifier.notify_room(R1) == 1
        assert await waits[0] is True
        assert await waits[1] is False
    assert notifier.waiting() == 0 and notifier.rooms_listened() == 0


async def test_all_listeners_of_a_room_wake_at_once() -> None:
    notifier = Notifier()
    listeners = [notifier.listen(UserId(f"@u{i}:x"), [R1, R2]) for i in range(20)]
    tasks = [asyncio.create_task(lst.wait(5)) for lst in listeners]
    await asyncio.sleep(0)
    assert notifier.notify_room(R2) == 20
    assert all(await asyncio.gather(*tasks))
    assert notifier.waiting() == 0
    assert notifier.notify_room(R1) == 0  # woken listeners left every list


async def test_wake_before_wait_is_remembered() -> None:
    notifier = Notifier()
    with notifier.listen(A, [R1]) as listener:
        notifier.notify_room(R1)  # lands while the handler is still reading
        assert await listener.wait(5) is True


async def test_user_streams_wake_the_user() -> None:
    notifier = Notifier()
    with notifier.listen(A, []) as listener:
        assert notifier.notify_user(B) == 0
        assert notifier.notify_users([A, B]) == 1
        assert listener.woken


async def test_timeout_and_zero_wait() -> None:
    notifier = Notifier()
    with notifier.listen(A, [R1]) as listener:
        assert await listener.wait(0) is False
        assert await listener.wait(0.05) is False
    assert notifier.waiting(A) == 0


async def test_per_user_bound_wakes_the_oldest() -> None:
    notifier = Notifier(max_per_user=2)
    first = notifier.listen(A, [R1])
    second = notifier.listen(A, [R1])
    other = notifier.listen(B, [R1])
    third = notifier.listen(A, [R2])
    assert first.woken and not second.woken and not third.woken and not other.woken
    assert first.superseded and not second.superseded
    assert notifier.waiting(A) == 2
    for listener in (second, third, other):
        listener.close()
    assert notifier.waiting() == 0 and notifier.rooms_listened() == 0


async def test_close_wakes_everyone_and_later_waits_return() -> None:
    notifier = Notifier()
    listener = notifier.listen(A, [R1])
    task = asyncio.create_task(listener.wait(30))
    await asyncio.sleep(0)
    notifier.close()
    assert await asyncio.wait_for(task, 1) is True
    late = notifier.listen(B, [R1])
    assert await late.wait(30) is True
