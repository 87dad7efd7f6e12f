"""A minimal ``Database`` for store tests: one writer thread, BEGIN IMMEDIATE per call."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from cis.storage.client.schema import CLIENT_SCHEMA_V1
from cis.storage.sqlite import Migration, connect, migrate

T = TypeVar("T")


class SerialDb:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._conn = connect(path)
        migrate(self._conn, "cs-test", (Migration(1, "cs", CLIENT_SCHEMA_V1),), path)
        self.names: list[str] = []

    async def run_interaction(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.names.append(name)

        def txn() -> T:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._pool, txn)

    async def read(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.names.append(name)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self._conn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._conn.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SerialDb]:
    database = SerialDb(tmp_path / "node.db")
    yield database
    database.close()
