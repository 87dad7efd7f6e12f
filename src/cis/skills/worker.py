"""``SkillWorker``: one thread per skill, running the skill's own asyncio event loop.

Every call into a skill (``init``, handlers, commands, stream handlers) is submitted here, so a
skill that blocks its thread (``time.sleep``, a busy loop) or awaits forever stalls only itself:
the node's loop only ever waits on ``concurrent.futures`` with a deadline (``watchdog``).

A Python thread cannot be killed. ``stop`` cancels the loop's tasks and stops it; when the
thread does not finish within the grace period (it is stuck in blocking code) it is
*abandoned*: it is a daemon thread, holds no lock the node needs, and whatever it does later
reaches nothing, since the skill's API refuses every call once the skill is disabled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from cis.log import get_logger

__all__ = ["SkillWorker"]

log = get_logger(__name__)

T = TypeVar("T")

STOP_GRACE_S: Final = 2.0


class SkillWorker:
    """A daemon thread running an event loop for one skill. ``start``, ``submit``, ``stop``."""

    def __init__(self, skill: str) -> None:
        self.skill = skill
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"cis-skill-{skill}", daemon=True)
        self._started = threading.Event()
        self._stopped = False
        self.abandoned = False

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> concurrent.futures.Future[T]:
        """Call ``fn(*args)`` on the worker's loop (awaiting it if it returns an awaitable).

        The call itself happens on the worker thread, so even a skill whose "coroutine" is a
        plain blocking function never runs on the caller's thread.
        """

        async def invoke() -> T:
            result: Any = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[no-any-return]

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop)

    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel a submitted call (its task is cancelled on the worker's loop, if that loop
        still runs; a blocked loop sees it when it unblocks, if ever)."""
        future.cancel()

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        """Cancel everything and stop the loop; return whether the thread finished in time.

        Blocking. A thread that does not finish is abandoned (see the module docstring).
        """
        if not self._stopped:
            self._stopped = True
            if self._thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(grace_s)
        if self._thread.is_alive():
            if not self.abandoned:
                self.abandoned = True
                log.warning("skill_thread_abandoned", skill=self.skill)
            return False
        return True
