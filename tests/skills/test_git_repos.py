"""The Git skill's names and its one authority over refs (compare-and-swap, fast-forward)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, Commit, Tree

from cis.clock import FakeClock
from cis.skills.git import schema
from cis.skills.git.names import InvalidName, parse_cis_url, validate_ref, validate_repo
from cis.skills.git.repos import (
    FETCH_FIRST,
    MISSING_OBJECTS,
    NON_FAST_FORWARD,
    Repositories,
    UpdateRequest,
)
from cis.storage.database import Database

ZERO = "0" * 40


def test_names() -> None:
    assert parse_cis_url("cis://alpha/voxel-engine").repo == "voxel-engine"
    assert str(parse_cis_url("cis://alpha/voxel-engine.git/")) == "cis://alpha/voxel-engine"
    for bad in ("http://alpha/x", "cis://alpha", "cis://Alpha/x", "cis://alpha/a/b", "cis://-a/x"):
        with pytest.raises(InvalidName):
            parse_cis_url(bad)
    for bad in ("", "Voxel", "-x", "a..b", "x.git", "a" * 65, "a b", "é"):
        with pytest.raises(InvalidName):
            validate_repo(bad)
    assert validate_repo("a" * 64) == "a" * 64
    assert validate_ref("refs/heads/feature/one") == "refs/heads/feature/one"
    for bad in ("HEAD", "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/a b", "heads/x"):
        with pytest.raises(InvalidName):
            validate_ref(bad)


@pytest.fixture
def repos(tmp_path: Path) -> Iterator[tuple[Repositories, DiskObjectStore]]:
    db = Database.open(tmp_path / "git.db", kind="skill.git", migrations=schema.MIGRATIONS)
    repositories = Repositories(tmp_path / "repos", db, "alpha", FakeClock())  # type: ignore[arg-type]
    store = repositories.object_store("voxel", create=True)
    yield repositories, store
    store.close()
    db.close()


def commit(store: DiskObjectStore, message: str, parents: list[bytes]) -> str:
    blob = Blob.from_string(message.encode())
    tree = Tree()
    tree.add(b"file", 0o100644, blob.id)
    made = Commit()
    made.tree = tree.id
    made.parents = parents
    made.author = made.committer = b"Ada <ada@example.org>"
    made.author_time = made.commit_time = 1_700_000_000
    made.author_timezone = made.commit_timezone = 0
    made.message = message.encode()
    for obj in (blob, tree, made):
        store.add_object(obj)
    return made.id.decode()


def test_compare_and_swap_and_fast_forward(repos: tuple[Repositories, DiskObjectStore]) -> None:
    repositories, store = repos
    one = commit(store, "one", [])
    two = commit(store, "two", [one.encode()])
    fork = commit(store, "fork", [one.encode()])
    main, tag = "refs/heads/main", "refs/tags/v1"

    def update(ref: str, old: str, new: str, force: bool = False) -> str | None:
        return repositories.update_refs(
            "voxel", store, [UpdateRequest(ref, old, new, force)], pusher="@cis:alpha.cis.local"
        )[0]

    assert update(tag, ZERO, one) is None  # a tag first: no branch for HEAD yet
    info = repositories.info("voxel")
    assert info is not None and info.head is None and info.home_node == "alpha"
    assert update(main, ZERO, one) is None
    assert update(main, ZERO, two) == FETCH_FIRST  # created meanwhile
    assert update(main, fork, two) == FETCH_FIRST  # stale old value
    assert update(main, one, two) is None  # fast-forward
    assert update(main, two, fork) == NON_FAST_FORWARD
    assert update(main, two, "f" * 40) == MISSING_OBJECTS
    assert update(main, two, fork, force=True) is None
    assert repositories.refs("voxel") == {main: fork, tag: one}
    assert update(tag, one, ZERO) is None  # deleted
    info = repositories.info("voxel")
    assert info is not None and info.head == main
    pushes = repositories._db.read_blocking("outbox", schema.outbox)  # type: ignore[attr-defined]
    assert [(p.ref, p.old, p.new) for p in pushes] == [
        (tag, ZERO, one), (main, ZERO, one), (main, one, two), (main, two, fork), (tag, one, ZERO),
    ]  # fmt: skip


def test_concurrent_updates_of_one_ref_have_one_winner(
    repos: tuple[Repositories, DiskObjectStore],
) -> None:
    repositories, store = repos
    base = commit(store, "base", [])
    repositories.update_refs(
        "voxel", store, [UpdateRequest("refs/heads/main", ZERO, base, False)], pusher="@a:x"
    )
    children = [commit(store, f"child {n}", [base.encode()]) for n in range(8)]
    results: list[str | None] = []
    barrier = threading.Barrier(len(children))

    def push(child: str) -> None:
        barrier.wait()
        request = UpdateRequest("refs/heads/main", base, child, False)
        results.append(repositories.update_refs("voxel", store, [request], pusher="@a:x")[0])

    threads = [threading.Thread(target=push, args=(c,)) for c in children]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results.count(None) == 1 and results.count(FETCH_FIRST) == len(children) - 1
    assert repositories.refs("voxel")["refs/heads/main"] in children
