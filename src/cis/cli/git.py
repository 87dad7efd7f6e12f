"""``cis-node git list|private``: the Git skill's repositories.

``git push/fetch/clone cis://NODE/REPO`` need no subcommand: ``git-remote-cis`` (installed
with cis) is what git runs for ``cis://`` URLs. A repository's room ``!git.REPO:{node_id}``
federates from its first push (so another node can clone); ``private REPO`` stops that
(``--off`` resumes it).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cis.cli.options import home_option
from cis.home import Home


def _call(home: Home, command: str, args: dict[str, Any]) -> dict[str, Any]:
    from cis.skills.local import call_command, find_local_node

    return call_command(find_local_node(home), "git", command, args)


@click.group("git")
def command() -> None:
    """Repositories served to git at cis://NODE/REPO."""


@command.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_repositories(home: Home, as_json: bool) -> int:
    """Repositories this node holds, with their HEAD, refs and room."""
    repos = _call(home, "list", {})["repositories"]
    if as_json:
        click.echo(json.dumps({"repositories": repos}, sort_keys=True))
        return 0
    for repo in repos:
        privacy = "private" if repo["private"] else "federated"
        click.echo(
            f"{repo['repo']}\thome {repo['home_node']}\t{repo['refs']} refs\t"
            f"HEAD {repo['head'] or '-'}\t{repo['room_id'] or '(no room yet)'}\t{privacy}"
        )
    return 0


@command.command("private")
@home_option
@click.argument("repo")
@click.option("--off", is_flag=True, help="Federate the repository's room again.")
def make_private(home: Home, repo: str, off: bool) -> int:
    """Stop federating REPO's room (io.cis.room.federation = false)."""
    result = _call(home, "private", {"repo": repo, "private": not off})
    state = "private" if result["private"] else "federated"
    click.echo(f"{result['repo']}: {result['room_id']} is {state}")
    return 0
