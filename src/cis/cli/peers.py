"""``cis-node peers``: the nodes this node knows, their tunnels, status and round-trip time.

With the node running the answer comes from its admin API (live tunnels); otherwise from
``node.db`` (the last known endpoint, time seen and RTT, all offline).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cis.cli.admin_client import call, running_url
from cis.cli.options import home_option
from cis.home import Home


def _offline(home: Home) -> list[dict[str, Any]]:
    from cis.storage import federation as fed_store
    from cis.storage.node_store import NodeStore

    store = NodeStore.open(home)
    try:
        identity = store.load_identity()
        rows = store.db.read_blocking("peers", fed_store.peers)
        keys = {k.did: k for k in store.db.read_blocking("server_keys", fed_store.server_keys)}
        levels = store.db.read_blocking("trust_levels", fed_store.trust_levels, identity.did)
    finally:
        store.close()
    out = []
    for row in rows:
        known = keys.get(row.did or "")
        did_key = known.did_key if known is not None else None
        level = levels.get(did_key or "", levels.get(row.did or ""))
        out.append(
            {
                "did": row.did, "did_key": did_key, "node_id": row.node_id, "online": False,
                "rtt_ms": row.rtt_ms, "endpoint": row.endpoint, "remote": None,
                "last_seen_ms": row.last_seen_ms, "trust": level,
            }
        )  # fmt: skip
    return out


@click.command("peers")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(home: Home, as_json: bool) -> int:
    """Show the peers: tunnels, status, RTT, trust."""
    url = running_url(home)
    peers = call(home, url, "GET", "/peers")["peers"] if url is not None else _offline(home)
    if as_json:
        click.echo(json.dumps({"peers": peers, "running": url is not None}, sort_keys=True))
        return 0
    if not peers:
        click.echo("no peers")
        return 0
    for peer in peers:
        rtt = f"{peer['rtt_ms']:.1f} ms" if isinstance(peer.get("rtt_ms"), int | float) else "-"
        status = "online" if peer.get("online") else "offline"
        trust = peer.get("trust")
        shown = "-" if trust is None else str(trust)
        click.echo(
            f"{peer.get('node_id')}  {status:7}  rtt {rtt:>9}  trust {shown}"
            f"  {peer.get('did')}  {peer.get('endpoint') or ''}"
        )
    return 0
