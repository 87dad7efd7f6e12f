"""Creating and replacing whole homes, atomically.

A new home (``init``, ``restore``) is assembled in a staging folder beside the target and
renamed into place at the end, so a failure leaves the target as it was. An existing home is
never deleted: ``--force`` moves it aside to ``<home>.bak-<UTC timestamp>`` first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from cis.home import Home
from cis.identity import NodeIdentity
from cis.storage.errors import StorageError
from cis.storage.node_store import NodeStore

__all__ = [
    "create_layout",
    "discard_staging",
    "holds_node",
    "initialise_home",
    "install_home",
    "is_empty_dir",
    "move_aside",
    "staging_home",
    "write_admin_token",
]

HOME_MODE = 0o700


def holds_node(home: Home) -> bool:
    return home.node_db.exists()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def staging_home(target: Home, purpose: str) -> Home:
    """A fresh, private folder beside ``target`` (same file system, so rename is atomic)."""
    parent = target.root.parent
    parent.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    staging = parent / f".{target.root.name}.{purpose}-{secrets.token_hex(4)}"
    staging.mkdir(mode=HOME_MODE)
    return Home(staging)


def create_layout(home: Home) -> None:
    for folder in (home.rooms, home.blobs, home.skills, home.run_dir):
        folder.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    home.lock_file.touch(mode=0o600, exist_ok=True)  # present from the start: locking adds nothing
    os.chmod(home.root, HOME_MODE)


def initialise_home(staging: Home, identity: NodeIdentity, now_ms: int) -> None:
    """Lay out a new home with ``node.db`` holding ``identity`` and its system user."""
    create_layout(staging)
    store = NodeStore.open(staging, create=True)
    try:
        store.initialise(identity, now_ms)
    finally:
        store.close()


def move_aside(home: Home) -> Path:
    """Rename ``home`` to ``<home>.bak-<timestamp>`` (never over an existing one)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = home.root.with_name(f"{home.root.name}.bak-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = home.root.with_name(f"{home.root.name}.bak-{stamp}-{suffix}")
    os.rename(home.root, target)
    return target


def install_home(staging: Home, target: Home) -> None:
    """Rename the staging folder to the target (which must be absent or an empty folder)."""
    if target.root.exists() and not is_empty_dir(target.root):
        raise StorageError(f"{target.root} appeared while it was being created; nothing changed")
    try:
        os.replace(staging.root, target.root)
    except OSError as exc:
        raise StorageError(f"cannot move the new home into {target.root}: {exc.strerror}") from exc
    _fsync_dir(target.root.parent)


ADMIN_TOKEN_BYTES = 32


def write_admin_token(home: Home) -> None:
    """Create ``admin.token`` (0600): the credential local tools use against the admin API."""
    token = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
    partial = home.admin_token.with_name(".admin.token.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    os.replace(partial, home.admin_token)


def discard_staging(staging: Home) -> None:
    shutil.rmtree(staging.root, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
