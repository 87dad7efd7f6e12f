"""Fixtures for process tests: a fresh 3-node cluster per test module or test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.raftdb.harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three running members, ready, with a leader; every process killed at the end."""
    c = Cluster(tmp_path / "cluster")
    try:
        c.start()
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.close()
