"""``cis-node user add NAME [--admin] [--password-file F | --password-stdin]``.

Creates ``@NAME:{server_name}``. The password never travels in ``argv`` (visible to every user
of the machine in ``ps``): it is read from a file, from standard input, or, on a terminal,
prompted for twice with ``getpass``. With the node running the user is created through its
admin API (with ``admin.token``); otherwise ``node.db`` is written directly while holding the
home's lock, so no node can start meanwhile.

``--admin`` makes the user a server admin of this node, which is not the same as power in a
room (that is each room's ``m.room.power_levels``).
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

import click

from cis.cli.options import home_option
from cis.errors import CisError
from cis.home import Home

_TIMEOUT_S = 30.0


class UserAddFailed(CisError):
    """The user could not be created (the message says why)."""


def _strip_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def read_password(password_file: Path | None, from_stdin: bool) -> str:
    if password_file is not None and from_stdin:
        raise click.UsageError("use --password-file or --password-stdin, not both")
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserAddFailed(f"cannot read {password_file}: {exc.strerror or exc}") from None
        password = _strip_newline(text.split("\n", 1)[0] + "\n")
    elif from_stdin:
        password = _strip_newline(sys.stdin.readline())
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise UserAddFailed("the passwords differ")
    else:
        raise UserAddFailed("no password: use --password-file F or --password-stdin")
    if not password:
        raise UserAddFailed("the password is empty")
    return password


def _add_online(home: Home, url: str, name: str, password: str, admin: bool) -> str:
    import httpx

    try:
        token = home.admin_token.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise UserAddFailed(f"cannot read {home.admin_token}: {exc.strerror or exc}") from None
    try:
        response = httpx.post(
            f"{url}/_cis/admin/v1/users",
            json={"localpart": name, "password": password, "admin": admin},
            headers={"Authorization": f"Bearer {token}"},
            timeout=_TIMEOUT_S,
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise UserAddFailed(f"the running node did not answer ({type(exc).__name__})") from None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error", "request failed") if isinstance(body, dict) else "failed"
        raise UserAddFailed(f"{error} ({response.status_code})")
    return str(body["user_id"])


def _add_offline(home: Home, name: str, password: str, admin: bool) -> str:
    from cis.handlers.accounts import RESERVED_LOCALPARTS
    from cis.handlers.auth_requests import check_localpart
    from cis.handlers.errors import ApiError
    from cis.handlers.passwords import hash_password_sync
    from cis.storage.client.accounts import UserExists, create_user_txn
    from cis.storage.lock import HomeLock
    from cis.storage.node_store import NodeStore

    with HomeLock(home, "user add"):
        store = NodeStore.open(home)
        try:
            identity = store.load_identity()
            try:
                user_id = check_localpart(name, identity.server_name)
            except ApiError as exc:
                raise UserAddFailed(exc.message) from None
            if name in RESERVED_LOCALPARTS:
                raise UserAddFailed(f"{user_id} is taken")
            try:
                store.db.run_interaction_blocking(
                    "create_user",
                    create_user_txn,
                    user_id=user_id,
                    password_hash=hash_password_sync(password),
                    admin=admin,
                    now_ms=time.time_ns() // 1_000_000,
                    displayname=name,
                )
            except UserExists:
                raise UserAddFailed(f"{user_id} is taken") from None
            return user_id
        finally:
            store.close()


@click.group("user")
def command() -> None:
    """Manage the node's Matrix users."""


@command.command("add")
@home_option
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user a server admin of this node.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the password from the first line of this file.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add(
    home: Home, name: str, admin: bool, password_file: Path | None, password_stdin: bool
) -> int:
    """Create the user @NAME:{server_name} (prompts for the password on a terminal)."""
    from cis.node import read_runtime_file
    from cis.storage.lock import running_pid

    password = read_password(password_file, password_stdin)
    runtime = read_runtime_file(home) if running_pid(home) is not None else None
    url = runtime.get("url") if runtime else None
    if isinstance(url, str) and url.startswith("http://"):
        user_id = _add_online(home, url, name, password, admin)
    else:
        user_id = _add_offline(home, name, password, admin)
    click.echo(f"created {user_id}" + (" (server admin)" if admin else ""))
    return 0
