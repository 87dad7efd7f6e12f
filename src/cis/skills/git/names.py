"""Names the Git skill accepts at its boundaries: repositories, ``cis://`` URLs, refs.

- A repository name matches ``[a-z0-9][a-z0-9._-]{0,63}`` and never ends in ``.git`` or
  contains ``..`` (a trailing ``.git`` in a URL is dropped, as hosting services do). It names
  the repository room ``!git.{REPO}:{node_id}.cis.local`` and the folder ``repos/{REPO}.git``.
- A URL is ``cis://NODE/REPO``, NODE being the home node's ``node_id``.
- Ref names follow git's ``check-ref-format`` rules (dulwich's ``check_ref_format``) and must
  live under ``refs/``; ``HEAD`` is only ever a symbolic ref the node sets.

This module is imported by ``git-remote-cis`` on every git operation: it stays dependency-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cis.errors import CisError

__all__ = [
    "NODE_RE",
    "REPO_RE",
    "CisUrl",
    "InvalidName",
    "parse_cis_url",
    "repo_room_localpart",
    "validate_ref",
    "validate_repo",
]

REPO_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
NODE_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
ZERO_SHA: Final = "0" * 40
SHA_RE: Final = re.compile(r"[0-9a-f]{40}\Z")
MAX_REF_BYTES: Final = 1024


class InvalidName(CisError):
    """A repository, node, URL or ref name outside what the Git skill accepts."""


def validate_repo(name: str) -> str:
    if (
        not isinstance(name, str)
        or not REPO_RE.match(name)
        or name.endswith(".git")
        or ".." in name
    ):
        raise InvalidName(
            f"invalid repository name {name!r}: use [a-z0-9][a-z0-9._-]{{0,63}}, not ending in .git"
        )
    return name


def repo_room_localpart(repo: str) -> str:
    return f"git.{validate_repo(repo)}"


@dataclass(frozen=True, slots=True)
class CisUrl:
    node: str
    repo: str

    def __str__(self) -> str:
        return f"cis://{self.node}/{self.repo}"


def parse_cis_url(url: str) -> CisUrl:
    """``cis://NODE/REPO`` (a trailing ``/`` or ``.git`` is dropped)."""
    if not isinstance(url, str) or not url.startswith("cis://"):
        raise InvalidName(f"not a cis:// URL: {url!r}")
    rest = url[len("cis://") :].rstrip("/")
    node, sep, repo = rest.partition("/")
    if repo.endswith(".git"):
        repo = repo[: -len(".git")]
    if not sep or not NODE_RE.match(node) or "/" in repo:
        raise InvalidName(f"expected cis://NODE/REPO, not {url!r}")
    return CisUrl(node, validate_repo(repo))


def validate_ref(name: str) -> str:
    """A ref a push may update: under ``refs/``, well formed per ``git check-ref-format``."""
    from dulwich.refs import Ref, check_ref_format

    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else b""
    if (
        not raw.startswith(b"refs/")
        or len(raw) > MAX_REF_BYTES
        or not check_ref_format(Ref(raw))
        or any(c < 0x20 or c == 0x7F for c in raw)
    ):
        raise InvalidName(f"invalid ref name {name!r}")
    return name


def validate_sha(value: str) -> str:
    if not isinstance(value, str) or not SHA_RE.match(value):
        raise InvalidName("an object id is 40 lower-case hex digits (SHA-1)")
    return value
