"""The scenario scripts, shortened, with the linearizability checker on their histories."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.raftdb.scenarios import run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.mark.parametrize(
    "name",
    ["leader_kill", "restart_single_node", "partition_minority", "prepare_commit_kill"],
)
def test_scenario_passes(name: str, tmp_path: Path) -> None:
    report = asyncio.run(run_scenario(name, tmp_path / name, duration=7.0))
    assert report.passed, "\n".join(report.lines)
    assert any("linearizability: linearizable" in line for line in report.lines)
    assert any("replicas identical" in line for line in report.lines)
