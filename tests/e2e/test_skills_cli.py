"""``cis-node skills|memory|git`` against a real node, and without one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
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
    assert cis_node(
        "memory", "set", "plan", "ship the node before the federation", *home
    ).stdout == ("set plan (private)\n")
    headers = {"Authorization": f"Bearer {node.admin_token}"}
    for key, value in (("recipe", "federation before the node ship"), ("other", "nothing")):
        answer = httpx.post(
            f"{node.url}/_cis/admin/v1/skills/memory/commands/set",
            json={"key": key, "value": value}, headers=headers, timeout=30,
        )  # fmt: skip
        assert answer.json() == {"key": key, "scope": "private"}
    unauthorised = httpx.post(f"{node.url}/_cis/admin/v1/skills/memory/commands/list", timeout=30)
    assert unauthorised.status_code == 401
    found = cis_node("memory", "search", "the node", "--json", *home)
    keys = [m["key"] for m in json.loads(found.stdout)["memories"]]
    assert keys == ["plan", "recipe"]  # "the node" as a phrase only in plan's value
    assert (
        cis_node("memory", "get", "plan", *home).stdout == "ship the node before the federation\n"
    )
    missing = cis_node("memory", "get", "nope", *home)
    assert missing.returncode == 1 and missing.stderr == "error: no memory 'nope'\n"
    bad = httpx.post(
        f"{node.url}/_cis/admin/v1/skills/memory/commands/set",
        json={"key": "bad\tkey", "value": "x"}, headers=headers, timeout=30,
    )  # fmt: skip
    assert bad.status_code == 400 and "control characters" in bad.json()["error"]
    assert cis_node("git", "list", "--json", *home).stdout.strip() == '{"repositories": []}'

    public = cis_node("memory", "set", "motto", "sovereign nodes federate", "--public", *home)
    assert public.stdout == "set motto (public in !memory:alpha.cis.local)\n", public.stderr
    searched = httpx.post(
        f"{node.url}/_cis/admin/v1/skills/memory/commands/search",
        json={"text": "sovereign nodes"}, headers=headers, timeout=30,
    ).json()["memories"]  # fmt: skip
    assert [(m["key"], m["scope"], m["public"]) for m in searched] == [
        ("motto", "!memory:alpha.cis.local", True)
    ]
    assert node.stop() == 0
