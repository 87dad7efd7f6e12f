"""Where a node keeps its files.

The home is ``--home``, else ``$CIS_HOME``, else ``~/.cis``::

    node.db              identity, users, tokens, rooms registry, derived indexes, trust, peers
    admin.token          the credential local tools use against the running node (0600)
    config.toml          optional configuration (see ``cis.config``)
    rooms/<hash>/        one folder per room: events.db (+ -wal, -shm) and meta.json
    rooms/archived/      archived rooms
    skills/<skill>.db    each skill's own database
    blobs/               content-addressed blobs (sha256)
    run/node.json        {"pid", "url"} of the running node, removed at clean stop
    run/lock             held (flock) by the process that owns the home
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ENV_HOME: Final = "CIS_HOME"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$CIS_HOME``, else ``~/.cis`` (made absolute, not resolved)."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cis"


def room_dir_name(room_id: str) -> str:
    """A room's folder: the first 32 hex digits of sha256(room_id).

    Raw room ids may contain ``/`` and collide on case-insensitive file systems.
    """
    return hashlib.sha256(room_id.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> Home:
        return cls(resolve_home(explicit))

    @property
    def node_db(self) -> Path:
        return self.root / "node.db"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def rooms(self) -> Path:
        return self.root / "rooms"

    @property
    def archived_rooms(self) -> Path:
        return self.rooms / "archived"

    def room_dir(self, room_id: str) -> Path:
        return self.rooms / room_dir_name(room_id)

    @property
    def skills(self) -> Path:
        return self.root / "skills"

    def skill_db(self, skill: str) -> Path:
        return self.skills / f"{skill}.db"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def runtime_file(self) -> Path:
        return self.run_dir / "node.json"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "lock"
