"""HTTP Basic authentication with rqlite's user file.

The file is a JSON list (https://rqlite.io/docs/guides/security/)::

    [{"username": "bob", "password": "secret1", "perms": ["query", "status"]},
     {"username": "*", "perms": ["status", "ready"]}]

``*`` grants its permissions to everyone, signed in or not. Permissions used here: ``all``,
``execute``, ``query``, ``status`` (``/status``, ``/nodes``), ``ready`` (``/readyz``),
``backup`` and ``snapshot`` (log compaction). rqlite accepts bcrypt hashes as passwords; this
service compares plain text only (in constant time) and refuses a file that holds a hash, so a
copied rqlite file fails loudly instead of locking everyone out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cis.cluster.raftdb.errors import ConfigError

__all__ = ["PERMISSIONS", "Users"]

PERMISSIONS: Final = frozenset(
    {"all", "execute", "query", "status", "ready", "backup", "snapshot", "join", "remove", "nodes"}
)


@dataclass(frozen=True, slots=True)
class _User:
    password: str
    perms: frozenset[str]


class Users:
    """Who may do what; ``allowed`` answers per request."""

    def __init__(self, users: dict[str, _User], everyone: frozenset[str]) -> None:
        self._users = users
        self._everyone = everyone

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the auth file {path}: {exc}") from exc
        if not isinstance(data, list):
            raise ConfigError(f"{path}: expected a JSON list of users")
        users: dict[str, _User] = {}
        everyone: frozenset[str] = frozenset()
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("username"), str):
                raise ConfigError(f"{path}: entry {i + 1} needs a username")
            perms = entry.get("perms", [])
            if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
                raise ConfigError(f"{path}: entry {i + 1}: perms must be a list of strings")
            unknown = set(perms) - PERMISSIONS
            if unknown:
                raise ConfigError(f"{path}: unknown permission(s) {sorted(unknown)}")
            name = entry["username"]
            if name == "*":
                everyone = frozenset(perms)
                continue
            password = entry.get("password")
            if not isinstance(password, str) or not password:
                raise ConfigError(f"{path}: user {name} needs a password")
            if password.startswith(("$2a$", "$2b$", "$2y$")):
                raise ConfigError(f"{path}: user {name}: bcrypt hashes are not supported")
            users[name] = _User(password, frozenset(perms))
        return cls(users, everyone)

    def allowed(self, authorization: str | None, perm: str) -> bool:
        if perm in self._everyone or "all" in self._everyone:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        name, sep, password = decoded.partition(":")
        user = self._users.get(name)
        if not sep or user is None:
            return False
        if not hmac.compare_digest(user.password.encode(), password.encode()):
            return False
        return "all" in user.perms or perm in user.perms
