"""``cis-node status``: the node's identity, whether it runs, its rooms and disk use.

With a node running (it holds the home's lock) the answer comes from its admin API; otherwise
``node.db`` is read read-only and ``running`` is false. ``--json`` prints exactly the keys of
``cis.handlers.status.NodeStatus``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cis.cli.options import home_option
from cis.handlers.status import NodeStatus, build_status
from cis.home import Home
from cis.node import read_runtime_file
from cis.storage.lock import running_pid
from cis.storage.node_store import inspect_node_db
from cis.storage.usage import measure_storage

_TIMEOUT_S = 5.0


def _from_running_node(home: Home) -> dict[str, Any] | None:
    runtime = read_runtime_file(home)
    url = runtime.get("url") if runtime else None
    if not isinstance(url, str) or not url.startswith("http://"):
        return None
    import httpx

    try:
        response = httpx.get(f"{url}/_cis/admin/v1/status", timeout=_TIMEOUT_S)
        response.raise_for_status()
        status: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return status


def collect_status(home: Home) -> NodeStatus | dict[str, Any]:
    running = running_pid(home) is not None
    if running:
        live = _from_running_node(home)
        if live is not None:
            return live
    summary = inspect_node_db(home.node_db)
    return build_status(
        summary.identity,
        running=running,
        listen=None,
        uptime_s=None,
        rooms=summary.rooms,
        usage=measure_storage(home),
    )


@click.command("status")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def command(home: Home, as_json: bool) -> int:
    """Show the node's identity, whether it runs, its rooms and disk use."""
    status = collect_status(home)
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return 0
    storage = status["storage"]
    missing = inspect_node_db(home.node_db).missing_rooms
    rooms = (
        f"{status['rooms']} ({missing} missing: their files are absent)"
        if missing
        else status["rooms"]
    )
    lines = [
        ("node_id", status["node_id"]),
        ("did", status["did"]),
        ("did_key", status["did_key"]),
        ("server_name", status["server_name"]),
        ("version", status["version"]),
        ("running", "yes" if status["running"] else "no"),
        ("listen", status["listen"] or "-"),
        ("uptime", f"{status['uptime_s']} s" if status["uptime_s"] is not None else "-"),
        ("rooms", rooms),
        ("storage", f"{storage['total_bytes']:,} bytes (node.db {storage['node_db_bytes']:,},"
         f" rooms {storage['rooms_bytes']:,}, blobs {storage['blobs_bytes']:,})"),
    ]  # fmt: skip
    for key, value in lines:
        click.echo(f"{key + ':':<12} {value}")
    return 0
