"""One process per home: an exclusive ``flock`` on ``run/lock``.

``cis-node run``, ``init --force`` and ``restore`` hold it for as long as they work on the home;
a second one fails at once with a one-line error naming the holder's pid. ``status`` only
*probes* it (a shared lock, released at once) to learn whether a node is running. The kernel
drops the lock when the holder dies, even by ``kill -9``, so a stale lock file never blocks.

A holder retries for up to a second before giving up, so a concurrent probe never makes a
``run`` fail.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from cis.home import Home
from cis.storage.errors import HomeInUse

__all__ = ["HomeLock", "running_pid"]

_RETRY_S: Final = 1.0
_RETRY_STEP_S: Final = 0.02


class HomeLock:
    """The exclusive lock on a home; use as a context manager or ``acquire``/``release``."""

    def __init__(self, home: Home, purpose: str = "cis-node") -> None:
        self.home = home
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        run_dir = self.home.run_dir
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.home.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + _RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f" (pid {holder})" if holder else ""
                    raise HomeInUse(
                        f"{self.home.root} is in use by another cis-node{who}; "
                        "stop it first or choose another --home"
                    ) from None
                time.sleep(_RETRY_STEP_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> HomeLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def running_pid(home: Home) -> int | None:
    """The pid of the process holding the home's lock (0 if unreadable), else ``None``."""
    path: Path = home.lock_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return _read_pid(fd) or 0
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
