"""``cis-node init``: create a node's home.

The home is assembled in a staging folder beside its place and renamed into it, so a bad name,
an existing home without ``--force`` or any failure changes nothing on disk. ``--force`` moves an
existing home aside (``<home>.bak-<timestamp>``), never deleting an identity. ``--if-missing``
(used by ``make run``) does nothing when the home already holds a node.
"""

from __future__ import annotations

import socket
import time

import click

from cis.cli.options import home_option
from cis.home import Home
from cis.identity import NodeIdentity, node_name_from_hostname, validate_node_name
from cis.storage.errors import StorageError
from cis.storage.homes import (
    discard_staging,
    holds_node,
    initialise_home,
    install_home,
    is_empty_dir,
    move_aside,
    staging_home,
    write_admin_token,
)
from cis.storage.lock import HomeLock
from cis.storage.node_store import inspect_node_db


def _describe(identity: NodeIdentity, home: Home) -> None:
    click.echo(f"node_id:     {identity.node_id}")
    click.echo(f"did:         {identity.did}")
    click.echo(f"did_key:     {identity.did_key}")
    click.echo(f"server_name: {identity.server_name}")
    click.echo(f"home:        {home.root}")


@click.command("init")
@home_option
@click.option("--node-name", "node_name", metavar="NAME", help="The node's name (a DNS label).")
@click.option("--force", is_flag=True, help="Move an existing home aside first.")
@click.option(
    "--if-missing",
    is_flag=True,
    help="Do nothing if the home holds a node; name it after the host unless --node-name.",
)
def command(home: Home, node_name: str | None, force: bool, if_missing: bool) -> int:
    """Create a node: its home, Ed25519 identity, system user and admin token."""
    if force and if_missing:
        raise click.UsageError("--force and --if-missing cannot be combined")
    if if_missing and holds_node(home):
        summary = inspect_node_db(home.node_db)
        click.echo(f"{home.root} already holds node {summary.identity.node_id}; nothing to do")
        return 0
    if node_name is None:
        if not if_missing:
            raise click.UsageError("missing option --node-name")
        node_name = node_name_from_hostname(socket.gethostname())
    identity = NodeIdentity.generate(validate_node_name(node_name))
    exists = home.root.exists()
    if exists and not home.root.is_dir():
        raise StorageError(f"{home.root} exists and is not a directory")
    if exists and not is_empty_dir(home.root) and not force:
        what = "holds a node" if holds_node(home) else "exists and is not empty"
        raise StorageError(f"{home.root} {what}; use --force to move it aside")
    staging = staging_home(home, "init")
    try:
        initialise_home(staging, identity, time.time_ns() // 1_000_000)
        write_admin_token(staging)
        moved = None
        if exists and not is_empty_dir(home.root):
            with HomeLock(home, "init"):  # refuses while a node runs on it
                moved = move_aside(home)
        install_home(staging, home)
    except BaseException:
        discard_staging(staging)
        raise
    if moved is not None:
        click.echo(f"moved the previous home aside to {moved}")
    _describe(identity, home)
    return 0
