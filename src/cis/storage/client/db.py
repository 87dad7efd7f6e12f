"""The seam between the Client-Server stores and ``node.db``'s writer and readers.

``run_interaction(name, fn)`` runs ``fn(conn)`` as one write transaction (on the writer
thread, group-committed; the caller is answered after the COMMIT); ``read(name, fn)`` runs
``fn(conn)`` on a reader connection. ``name`` names the transaction in logs and metrics.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Database(Protocol):
    async def run_interaction(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...
