"""``cis-node trust set DID LEVEL | list | rebind DID``: what this node does with a peer.

A DID is a ``did:cis:…`` or a ``did:key:…``. Levels: 0 no tunnel (blacklist), 1 read (a
tunnel; its users may join, with power level 0 in rooms administered here), 2 full. With the
node running the change goes through its admin API and applies at once (a peer lowered to 0
loses its tunnel; one raised reconnects and catches up); otherwise ``node.db`` is written
while holding the home's lock.

``rebind DID``: un-pin the key of the DID's server (refused since another key claimed it),
pinning the key the DID names when it is known (a ``did:key``, or a refused claim recorded
for that ``did:cis``); otherwise the next authenticated handshake pins one.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cis.cli.admin_client import call, running_url
from cis.cli.options import home_option
from cis.errors import CisError
from cis.home import Home


class TrustFailed(CisError):
    """A trust change that cannot be made (the message says why)."""


def _check_did(did: str) -> str:
    from cis.identity.did import parse_did
    from cis.identity.errors import InvalidDid

    try:
        return str(parse_did(did))
    except InvalidDid as exc:
        raise TrustFailed(str(exc)) from None


def _offline(home: Home, fn: Any) -> Any:
    from cis.storage.lock import HomeLock
    from cis.storage.node_store import NodeStore

    with HomeLock(home, "trust"):
        store = NodeStore.open(home)
        try:
            return fn(store)
        finally:
            store.close()


@click.group("trust")
def command() -> None:
    """See and change the trust this node gives its peers (did_trust)."""


@command.command("set")
@home_option
@click.argument("did")
@click.argument("level", type=click.IntRange(0, 2))
def set_level(home: Home, did: str, level: int) -> int:
    """Set DID's trust level: 0 none, 1 read, 2 full."""
    did = _check_did(did)
    url = running_url(home)
    if url is not None:
        call(home, url, "PUT", "/trust", {"did": did, "level": level})
        click.echo(f"{did} trust {level} (applied by the running node)")
        return 0

    def write(store: Any) -> None:
        from cis.storage import federation as fed_store

        identity = store.load_identity()
        store.db.run_interaction_blocking(
            "set_trust", fed_store.set_trust_txn, identity.did, did, level
        )

    _offline(home, write)
    click.echo(f"{did} trust {level}")
    return 0


@command.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_levels(home: Home, as_json: bool) -> int:
    """List the DIDs with an explicit level, and the default for the others."""
    url = running_url(home)
    if url is not None:
        answer = call(home, url, "GET", "/trust")
    else:

        def read(store: Any) -> dict[str, Any]:
            from cis.config import load_config
            from cis.storage import federation as fed_store

            identity = store.load_identity()
            levels = store.db.read_blocking("trust_levels", fed_store.trust_levels, identity.did)
            default = load_config(home).default_trust
            return {
                "default": default,
                "entries": [{"did": d, "level": lv} for d, lv in sorted(levels.items())],
            }

        answer = _offline(home, read)
    if as_json:
        click.echo(json.dumps(answer, sort_keys=True))
        return 0
    click.echo(f"default {answer['default']}")
    for entry in answer["entries"]:
        click.echo(f"{entry['level']}  {entry['did']}")
    return 0


@command.command("rebind")
@home_option
@click.argument("did")
def rebind(home: Home, did: str) -> int:
    """Let DID's server be bound to a new key (after the old one was replaced)."""
    did = _check_did(did)
    url = running_url(home)
    if url is not None:
        answer = call(home, url, "POST", "/trust/rebind", {"did": did})
    else:

        def write(store: Any) -> dict[str, Any]:
            from cis.handlers.federation_admin import rebind_offline
            from cis.identity.errors import InvalidDid

            try:
                result: dict[str, Any] = store.db.run_interaction_blocking(
                    "rebind", rebind_offline, did
                )
            except InvalidDid as exc:
                raise TrustFailed(str(exc)) from None
            return result

        answer = _offline(home, write)
    pinned = answer.get("pinned") or "the key of the next authenticated handshake"
    click.echo(
        f"{answer['server_name']}: unpinned {answer.get('unpinned') or 'nothing'}; pins {pinned}"
    )
    return 0
