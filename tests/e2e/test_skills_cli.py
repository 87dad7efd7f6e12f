"""``cis-node skills|memory|git`` against a real node, and without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Processes, cis_node

pytestmark = pytest.mark.e2e


def test_skills_and_memory_through_the_cli(processes: Processes, node_home: Path) -> None:
    home = ["--home", str(node_home)]
    offline = json.loads(cis_node("skills", "list", "--json", *home).stdout)
    assert offline["running"] is False
    assert {s["name"]: s["state"] for s in offline["skills"]} == {
        "git": "stopped", "memory": "stopped",
    }  # fmt: skip
    down = cis_node("memory", "list", *home)
    assert down.returncode == 1
    assert down.stderr == f"error: no node running for CIS_HOME={node_home}\n"

    node = processes.run_node(node_home)
    listed = json.loads(cis_node("skills", "list", "--json", *home).stdout)
    assert listed["running"] is True
    assert {s["name"]: s["state"] for s in listed["skills"]} == {
        "git": "running", "memory": "running",
    }  # fmt: skip
    table = cis_node("skills", "list", *home).stdout
    assert "git" in table and "running" in table

    for key, value in (
        ("plan", "ship the node before the federation"),
        ("recipe", "federation before the node ship"),
        ("other", "nothing to see"),
    ):
        assert cis_node("memory", "set", key, value, *home).returncode == 0
    found = cis_node("memory", "search", "the node", "--json", *home)
    keys = [m["key"] for m in json.loads(found.stdout)["memories"]]
    assert keys == ["plan", "recipe"]  # "the node" as a phrase only in plan's value
    assert (
        cis_node("memory", "get", "plan", *home).stdout == "ship the node before the federation\n"
    )
    missing = cis_node("memory", "get", "nope", *home)
    assert missing.returncode == 1 and missing.stderr == "error: no memory 'nope'\n"
    bad = cis_node("memory", "set", "bad\tkey", "x", *home)
    assert bad.returncode == 1 and "control characters" in bad.stderr
    assert cis_node("git", "list", "--json", *home).stdout.strip() == '{"repositories": []}'
    assert node.stop() == 0
