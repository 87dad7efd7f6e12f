"""``cis-node memory set|get|list|delete|search|join``: the node's memories (the memory skill).

Private memories stay in ``skills/memory.db``; ``--public`` ones are state events of the
federated room ``!memory:{node_id}.cis.local`` (``--node N``: the memory room of node N, joined
by this node). Every subcommand goes through the running node. A ``VALUE`` of ``-`` is read
from standard input (so a secret need not appear in ``ps``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cis.cli.options import home_option
from cis.home import Home


def _call(home: Home, command: str, args: dict[str, Any]) -> dict[str, Any]:
    from cis.skills.local import call_command, find_local_node

    return call_command(find_local_node(home), "memory", command, args)


@click.group("memory")
def command() -> None:
    """Private and public memories, with full-text search."""


@command.command("set")
@home_option
@click.argument("key")
@click.argument("value")
@click.option("--public", is_flag=True, help="A state event in the federated memory room.")
@click.option("--node", default=None, help="The memory room of this node (default: ours).")
def set_memory(home: Home, key: str, value: str, public: bool, node: str | None) -> int:
    """Remember VALUE under KEY (VALUE '-' reads standard input)."""
    if value == "-":
        value = sys.stdin.read().removesuffix("\n")
    args: dict[str, Any] = {"key": key, "value": value, "public": public or node is not None}
    if node is not None:
        args["node"] = node
    scope = _call(home, "set", args)["scope"]
    click.echo(f"set {key} ({'private' if scope == 'private' else 'public in ' + scope})")
    return 0


@command.command("get")
@home_option
@click.argument("key")
@click.option("--public", is_flag=True, help="The public memory even if a private one exists.")
@click.option("--node", default=None, help="From the memory room of this node.")
@click.option("--json", "as_json", is_flag=True, help="Print the memory as a JSON object.")
def get_memory(home: Home, key: str, public: bool, node: str | None, as_json: bool) -> int:
    """Print the value remembered under KEY."""
    args: dict[str, Any] = {"key": key, "public": public}
    if node is not None:
        args["node"] = node
    memory = _call(home, "get", args)
    click.echo(json.dumps(memory, sort_keys=True) if as_json else memory["value"])
    return 0


def _print(memories: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"memories": memories}, sort_keys=True))
        return
    for memory in memories:
        scope = "private" if memory["scope"] == "private" else memory["scope"]
        value = " ".join(str(memory["value"]).split())
        click.echo(f"{memory['key']}\t{scope}\t{value[:200]}")


@command.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_memories(home: Home, as_json: bool) -> int:
    """List every memory (key, scope, value)."""
    _print(_call(home, "list", {})["memories"], as_json)
    return 0


@command.command("delete")
@home_option
@click.argument("key")
@click.option("--public", is_flag=True, help="Delete the public memory.")
@click.option("--node", default=None, help="In the memory room of this node.")
def delete_memory(home: Home, key: str, public: bool, node: str | None) -> int:
    """Forget KEY."""
    args: dict[str, Any] = {"key": key, "public": public or node is not None}
    if node is not None:
        args["node"] = node
    _call(home, "delete", args)
    click.echo(f"deleted {key}")
    return 0


@command.command("join")
@home_option
@click.argument("node")
def join_memories(home: Home, node: str) -> int:
    """Follow NODE's public memories (NODE admits this node by its trust in it)."""
    joined = _call(home, "join", {"node": node})
    click.echo(f"joined {joined['room_id']} ({joined['memories']} memories)")
    return 0


@command.command("search")
@home_option
@click.argument("text")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search_memories(home: Home, text: str, limit: int, as_json: bool) -> int:
    """Full-text search over keys and values; the exact phrase ranks first."""
    _print(_call(home, "search", {"text": text, "limit": limit})["memories"], as_json)
    return 0
