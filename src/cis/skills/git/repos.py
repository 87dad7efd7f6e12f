"""Repositories on disk and the one authority over their refs.

Each repository is a dulwich object store in bare layout under ``skills/git/repos/{REPO}.git``;
its refs are rows of the skill's database (``schema``). Every ref update goes through
``Repositories.update_refs``, which holds the repository's lock while it

1. reads the refs as they are now;
2. refuses an update whose old value is not the current one: ``fetch first`` (git's word for
   "the remote moved since you looked"; the loser of a race gets exactly this, never an ``ok``);
3. refuses one whose new object is absent (``missing necessary objects``), and one that is not a
   fast-forward unless forced (``non-fast-forward``);
4. commits the accepted updates (compare-and-swap again in SQL) together with their push rows.

Methods block: they run in the threads that serve git (never on an event loop).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from cis.clock import Clock
from cis.skills.contract import SkillDatabase
from cis.skills.git.names import NODE_RE, InvalidName, validate_repo
from cis.skills.git.schema import (
    ZERO,
    RefUpdate,
    RepoRow,
    apply_updates_txn,
    read_refs,
    read_repo,
)

if TYPE_CHECKING:
    from dulwich.object_store import DiskObjectStore
    from dulwich.objects import Commit, ObjectID

# dulwich is imported where an object store is opened or read, not at node start.

__all__ = ["FETCH_FIRST", "NON_FAST_FORWARD", "Repositories", "UpdateRequest"]

FETCH_FIRST: Final = "fetch first"
NON_FAST_FORWARD: Final = "non-fast-forward"
MISSING_OBJECTS: Final = "missing necessary objects"
MAX_WALK: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    ref: str
    old: str
    new: str
    force: bool


class Repositories:
    def __init__(self, root: Path, db: SkillDatabase, node_id: str, clock: Clock) -> None:
        self.root = root
        self._db = db
        self._node_id = node_id
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def key(self, home_node: str, repo: str) -> str:
        """How a repository is stored here: its name when it is homed here, ``REPO@HOME`` for a
        replica of another node's (so the two never collide)."""
        validate_repo(repo)
        return repo if home_node == self._node_id else f"{repo}@{home_node}"

    def path(self, key: str) -> Path:
        repo, _, home = key.partition("@")
        validate_repo(repo)
        if home and not NODE_RE.match(home):
            raise InvalidName(f"invalid node id {home!r}")
        return self.root / f"{key}.git"

    def lock(self, repo: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(repo, threading.Lock())

    def info(self, repo: str) -> RepoRow | None:
        return self._db.read_blocking("read_repo", read_repo, repo)

    def refs(self, repo: str) -> dict[str, str]:
        return self._db.read_blocking("read_refs", read_refs, repo)

    def exists(self, repo: str) -> bool:
        return (self.path(repo) / "objects").is_dir()

    def object_store(self, repo: str, *, create: bool = False) -> DiskObjectStore:
        """The repository's object store (created in bare layout when asked)."""
        from dulwich.object_store import DiskObjectStore
        from dulwich.repo import Repo

        path = self.path(repo)
        if not (path / "objects").is_dir():
            if not create:
                raise FileNotFoundError(path)
            with self.lock(repo):
                if not (path / "objects").is_dir():
                    self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                    Repo.init_bare(str(path), mkdir=True).close()
        return DiskObjectStore(str(path / "objects"))

    def update_refs(
        self,
        repo: str,
        store: DiskObjectStore,
        requests: Sequence[UpdateRequest],
        *,
        pusher: str,
        objects: Sequence[str] = (),
        objects_count: int = 0,
    ) -> list[str | None]:
        """Apply ``requests`` under the repository's lock; per request ``None`` (accepted) or
        git's reason for refusing it."""
        with self.lock(repo):
            current = self.refs(repo)
            statuses: list[str | None] = []
            accepted: list[RefUpdate] = []
            for request in requests:
                reason = self._refusal(store, current, request)
                statuses.append(reason)
                if reason is None:
                    accepted.append(RefUpdate(request.ref, request.old, request.new))
                    if request.new == ZERO:
                        current.pop(request.ref, None)
                    else:
                        current[request.ref] = request.new
            if accepted:
                self._db.run_interaction_blocking(
                    "update_refs",
                    apply_updates_txn,
                    repo,
                    accepted,
                    home_node=self._node_id,
                    pusher=pusher,
                    objects=list(objects),
                    objects_count=objects_count,
                    now_ms=self._clock.time_ms(),
                )
        return statuses

    @staticmethod
    def _refusal(
        store: DiskObjectStore, current: dict[str, str], request: UpdateRequest
    ) -> str | None:
        if current.get(request.ref, ZERO) != request.old:
            return FETCH_FIRST
        if request.new in (ZERO, request.old):
            return None
        if cast("ObjectID", request.new.encode()) not in store:
            return MISSING_OBJECTS
        checked = not request.force and request.old != ZERO
        if checked and not is_ancestor(store, request.old, request.new):
            return NON_FAST_FORWARD
        return None


def _peel_to_commit(store: DiskObjectStore, sha: str) -> Commit | None:
    from dulwich.objects import Commit, ObjectID, Tag

    obj = store[ObjectID(sha.encode())]
    while isinstance(obj, Tag):
        obj = store[obj.object[1]]
    return obj if isinstance(obj, Commit) else None


def is_ancestor(store: DiskObjectStore, old: str, new: str) -> bool:
    """Whether commit ``old`` is reachable from ``new`` (a fast-forward from ``old``)."""
    from dulwich.objects import Commit

    try:
        target = _peel_to_commit(store, old)
        start = _peel_to_commit(store, new)
    except KeyError:
        return False
    if target is None or start is None:
        return False
    seen = {start.id}
    todo = [start.id]
    while todo and len(seen) < MAX_WALK:
        sha = todo.pop()
        if sha == target.id:
            return True
        try:
            commit = store[sha]
        except KeyError:
            continue
        if not isinstance(commit, Commit):
            continue
        for parent in commit.parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False
