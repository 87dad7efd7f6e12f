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


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three running members shared by the tests of one module (which must not break it)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        c.wait_ready(timeout=60)
        yield c
    finally:
        c.close()
