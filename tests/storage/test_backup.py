from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cis.clock import FakeClock
from cis.home import Home
from cis.identity import NodeIdentity
from cis.storage.backup import restore_backup, verify_backup, write_backup
from cis.storage.errors import BackupFailed, HomeInUse, NoNode, RestoreFailed
from cis.storage.homes import initialise_home, write_admin_token
from cis.storage.lock import HomeLock
from cis.storage.node_store import NodeStore, inspect_node_db
from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.stream import StreamPositions
from tests.consistency import check_home
from tests.factories import chain

ROOMS = ("!one:alpha.cis.local", "!two:alpha.cis.local")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def begin(self, files: int, total_bytes: int) -> None:
        self.calls.append(("begin", (files, total_bytes)))

    def advance(self, name: str, size: int) -> None:
        self.calls.append(("advance", name))

    def end(self) -> None:
        self.calls.append(("end", None))


def _make_home(root: Path, *, archive: bool = False) -> Home:
    home = Home(root)
    root.mkdir()
    initialise_home(home, NodeIdentity.generate("alpha"), 0)
    write_admin_token(home)
    (home.blobs / "ab").mkdir()
    (home.blobs / "ab" / "abcdef").write_bytes(b"blob bytes")
    node = NodeStore.open(home)

    async def fill() -> int:
        positions = StreamPositions(0)
        manager = RoomStoreManager(home, node, positions, clock=FakeClock(), max_open_rooms=2)
        for room_id in ROOMS:
            store = await manager.get_or_create(room_id)
            await store.store_events(chain(room_id, 4))
        if archive:
            await manager.archive_room(ROOMS[1])
        await manager.close()
        return positions.last_allocated

    node.end_run(0, asyncio.run(fill()))
    node.close()
    return home


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home", archive=True)
    progress = Recorder()
    result = write_backup(home, tmp_path / "backup", progress=progress)
    kinds = [f.kind for f in result.files]
    assert kinds[0] == "blob" and kinds[-1] == "node"
    assert any(f.path.startswith("rooms/archived/") for f in result.files)
    assert progress.calls[0][0] == "begin" and progress.calls[-1] == ("end", None)
    assert sum(1 for c in progress.calls if c[0] == "advance") == len(result.files)
    did, files = verify_backup(tmp_path / "backup")
    assert did == result.did and len(files) == len(result.files)

    target = Home(tmp_path / "restored")
    restored = restore_backup(tmp_path / "backup", target, now_ms=0)
    assert restored.did == result.did and restored.moved_aside is None
    assert restored.report.rooms_checked == 1  # the archived room stays archived
    check_home(target.root)
    assert (target.blobs / "ab" / "abcdef").read_bytes() == b"blob bytes"
    assert (target.admin_token).read_text() != (home.admin_token).read_text()
    restored_identity = inspect_node_db(target.node_db).identity
    assert restored_identity.seed == inspect_node_db(home.node_db).identity.seed


def test_backup_refuses_an_existing_destination_and_a_home_without_node(
    tmp_path: Path,
) -> None:
    home = _make_home(tmp_path / "home")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(BackupFailed, match="already exists"):
        write_backup(home, tmp_path / "taken")
    with pytest.raises(NoNode):
        write_backup(Home(tmp_path / "nothing"), tmp_path / "b2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "taken"]


def test_restore_failures_change_nothing(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    backup = tmp_path / "backup"
    write_backup(home, backup)
    target = Home(tmp_path / "target")
    target.root.mkdir()
    initialise_home(target, NodeIdentity.generate("beta"), 0)
    before = _tree(target.root)
    manifest_path = backup / "MANIFEST.json"
    original_manifest = manifest_path.read_text()

    def restore() -> None:
        restore_backup(backup, target, force=True, now_ms=0)

    cases: list[tuple[str, str]] = []
    manifest = json.loads(original_manifest)
    manifest["format"] = 2
    cases.append((json.dumps(manifest), "backup format 2 is not supported"))
    manifest = json.loads(original_manifest)
    manifest["files"][0]["path"] = "../../etc/passwd"
    cases.append((json.dumps(manifest), "names an unexpected file"))
    manifest = json.loads(original_manifest)
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "node.db"]
    cases.append((json.dumps(manifest), "lists no node.db"))
    manifest = json.loads(original_manifest)
    manifest["files"][1]["size"] += 1
    cases.append((json.dumps(manifest), "the manifest says"))
    manifest = json.loads(original_manifest)
    manifest["did"] = "did:cis:other:0000000000000000"
    cases.append((json.dumps(manifest), "names another DID"))
    cases.append(("not json", "cannot read"))
    for text, message in cases:
        manifest_path.write_text(text)
        with pytest.raises(RestoreFailed, match=message):
            restore()
        assert _tree(target.root) == before
    manifest_path.write_text(original_manifest)

    room = next(backup.glob("rooms/*/events.db"))
    saved = room.read_bytes()
    room.unlink()
    with pytest.raises(RestoreFailed, match=r"listed in MANIFEST\.json but missing"):
        restore()
    room.write_bytes(saved)

    with HomeLock(target, "run"), pytest.raises(HomeInUse):
        restore()
    assert _tree(target.root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "home", "target"]


def test_integrity_failures_are_caught(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    backup = tmp_path / "backup"
    write_backup(home, backup)
    # A database whose pages are damaged but whose manifest was rewritten to match.
    room = next(backup.glob("rooms/*/events.db"))
    conn = sqlite3.connect(room)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(room.read_bytes())
    for page in range(1, len(data) // page_size):  # every b-tree page header but the first
        data[page * page_size : page * page_size + 8] = b"\x5a" * 8
    room.write_bytes(bytes(data))
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    for entry in manifest["files"]:
        if (backup / entry["path"]) == room:
            entry["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (backup / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(RestoreFailed, match=r"integrity check|not a usable database"):
        verify_backup(backup)


def test_restore_moves_an_existing_home_aside_with_force(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    backup = tmp_path / "backup"
    write_backup(home, backup)
    target = Home(tmp_path / "target")
    target.root.mkdir()
    initialise_home(target, NodeIdentity.generate("beta"), 0)
    beta = inspect_node_db(target.node_db).identity.did
    result = restore_backup(backup, target, force=True, now_ms=0)
    assert result.moved_aside is not None
    assert inspect_node_db(result.moved_aside / "node.db").identity.did == beta
    assert inspect_node_db(target.node_db).identity.did == result.did


def test_a_bare_node_db_marks_rooms_missing(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    backup = tmp_path / "backup"
    write_backup(home, backup)
    single = tmp_path / "only-node.db"
    shutil.copyfile(backup / "node.db", single)
    target = Home(tmp_path / "target")
    result = restore_backup(single, target, now_ms=0)
    assert result.report.rooms_missing == 2
    summary = inspect_node_db(target.node_db)
    assert summary.rooms == 2 and summary.missing_rooms == 2
    check_home(target.root)


def _git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
def test_skill_files_are_backed_up_refs_before_objects(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    repos = home.skills / "git" / "repos"
    repos.mkdir(parents=True)
    bare = repos / "voxel.git"
    _git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "a.txt").write_text("one\n")
    _git("add", "a.txt", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    _git("tag", "-a", "v1", "-m", "first", cwd=work)
    _git("push", "-q", str(bare), "main", "v1", cwd=work)
    (bare / "refs" / "heads" / "main.lock").write_text("half-written ref\n")
    (home.skills / "git" / "state.db-wal").write_bytes(b"side file")

    result = write_backup(home, tmp_path / "backup")
    rels = [f.path for f in result.files if f.kind == "skill_file"]
    assert "skills/git/repos/voxel.git/HEAD" in rels
    assert not any(r.endswith((".lock", "-wal")) for r in rels)
    first_object = next(i for i, r in enumerate(rels) if "/objects/" in r)
    assert all("/objects/" in r for r in rels[first_object:])  # refs first, then objects

    target = Home(tmp_path / "restored")
    restore_backup(tmp_path / "backup", target, now_ms=0)
    restored = target.skills / "git" / "repos" / "voxel.git"
    _git("fsck", "--strict", cwd=restored)
    assert _git("show-ref", cwd=restored) == _git("show-ref", cwd=bare)


def test_restore_refuses_a_manifest_escaping_the_skill_folder(tmp_path: Path) -> None:
    home = _make_home(tmp_path / "home")
    (home.skills / "git").mkdir(parents=True)
    (home.skills / "git" / "note").write_text("x")
    write_backup(home, tmp_path / "backup")
    manifest_path = tmp_path / "backup" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        if entry["path"] == "skills/git/note":
            entry["path"] = "skills/git/../../node.db"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RestoreFailed, match="unexpected file"):
        restore_backup(tmp_path / "backup", Home(tmp_path / "restored"), now_ms=0)
    assert not (tmp_path / "restored").exists()
