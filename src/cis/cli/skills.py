"""``cis-node skills list [--json]``: installed and enabled skills, their rooms and state.

With a node running, the answer comes from its admin API (state, rooms, counters); otherwise
from the installed entry points and the configuration, with the state ``stopped``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cis.cli.options import home_option
from cis.home import Home


def _offline(home: Home) -> list[dict[str, Any]]:
    from cis.config import load_config
    from cis.skills.discovery import installed_skills

    installed = installed_skills()
    enabled = load_config(home).skills_enabled
    rows = []
    for name in sorted(set(installed) | set(enabled)):
        entry = installed.get(name)
        rows.append(
            {
                "name": name,
                "installed": entry is not None,
                "enabled": name in enabled,
                "state": "stopped" if name in enabled else "not enabled",
                "reason": None if entry is not None else "not installed",
                "rooms": [],
                "distribution": entry.distribution if entry else None,
                "version": entry.version if entry else None,
                "counters": {},
            }
        )
    return rows


def collect(home: Home) -> tuple[bool, list[dict[str, Any]]]:
    from cis.skills.local import NoNodeRunning, find_local_node, get_json

    try:
        node = find_local_node(home)
        skills = get_json(node, "/_cis/admin/v1/skills")["skills"]
    except NoNodeRunning:
        return False, _offline(home)
    return True, list(skills)


@click.group("skills")
def command() -> None:
    """The node's skills (plugins discovered through the cis.skills entry points)."""


@command.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_skills(home: Home, as_json: bool) -> int:
    """Show installed and enabled skills with their rooms and state."""
    running, skills = collect(home)
    if as_json:
        click.echo(json.dumps({"running": running, "skills": skills}, sort_keys=True))
        return 0
    click.echo(f"{'SKILL':<14} {'INSTALLED':<22} {'ENABLED':<8} STATE")
    for skill in skills:
        origin = f"{skill['distribution']} {skill['version']}" if skill["installed"] else "no"
        state = skill["state"] + (f" ({skill['reason']})" if skill.get("reason") else "")
        enabled = "yes" if skill["enabled"] else "no"
        click.echo(f"{skill['name']:<14} {origin:<22} {enabled:<8} {state}")
        for room in skill["rooms"]:
            click.echo(f"{'':<14} room {room}")
    if not running:
        click.echo("(no node running: state from the configuration)")
    return 0
