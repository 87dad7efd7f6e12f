"""Backups of a home, and restoring them (seed 000 §5.2, "node migration").

A backup is a new directory (0700, files 0600) written beside its destination and renamed into
place when complete::

    blobs/…                         copied (content-addressed, immutable)
    rooms/<hash>/events.db          each database copied in one step with VACUUM INTO
    rooms/<hash>/meta.json
    rooms/archived/<hash>/…
    skills/<skill>.db
    skills/<skill>/…                a skill's own files (the Git skill's repositories), copied
                                    with everything but ``objects/`` first (see ``_skill_files``)
    node.db                         last, so its registry names every room copied before it
    MANIFEST.json                   format version, DID, time; each file's size, sha256, schema

``VACUUM INTO`` copies one consistent snapshot in one read transaction, so a backup of a running
node completes; the paged online-backup API restarts on every write and may never finish.

A restore verifies the manifest (every file's size and sha256) and ``PRAGMA integrity_check`` of
every database *before* touching anything, assembles the new home beside the target, re-derives
``node.db``'s indexes from the room files (``cis.storage.recovery``, as after a crash) and
renames it into place; an existing home is moved aside (``--force``), never deleted. A bare
``node.db`` restores identity, users and trust; rooms whose files are absent become ``missing``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol

from cis import __version__
from cis.home import Home
from cis.log import get_logger
from cis.storage import node_schema
from cis.storage.errors import BackupFailed, RestoreFailed, StorageError
from cis.storage.homes import (
    create_layout,
    discard_staging,
    holds_node,
    install_home,
    is_empty_dir,
    move_aside,
    staging_home,
    write_admin_token,
)
from cis.storage.lock import HomeLock
from cis.storage.node_store import NodeStore, inspect_node_db
from cis.storage.recovery import ReindexReport, reindex
from cis.storage.rooms import schema as room_schema
from cis.storage.sqlite import application_id

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "BackupResult",
    "ManifestFile",
    "ProgressSink",
    "RestoreResult",
    "restore_backup",
    "verify_backup",
    "write_backup",
]

log = get_logger(__name__)

FORMAT_VERSION: Final = 1
MANIFEST: Final = "MANIFEST.json"
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
_CHUNK: Final = 1 << 20
_ROOM_PATH: Final = re.compile(r"^rooms/(archived/)?[0-9a-f]{32}/(events\.db|meta\.json)$")
_SKILL_PATH: Final = re.compile(r"^skills/[A-Za-z0-9_.-]+\.db$")
_BLOB_PATH: Final = re.compile(r"^blobs/[A-Za-z0-9_./-]+$")
_SKILL_DATA_PATH: Final = re.compile(r"^skills/[a-z][a-z0-9_]{0,31}/[^\x00-\x1f\x7f\\\\]+$")
_TRANSIENT_SUFFIXES: Final = ("-wal", "-shm", "-journal", ".lock")
"""Files a skill's folder may hold only mid-write: SQLite's side files, git's lock files."""


class ProgressSink(Protocol):
    """Where a backup or restore reports progress (the CLI draws a bar)."""

    def begin(self, files: int, total_bytes: int) -> None: ...
    def advance(self, name: str, size: int) -> None: ...
    def end(self) -> None: ...


class _Silent:
    def begin(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, name: str, size: int) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ManifestFile:
    path: str
    kind: str  # node | room | room_meta | skill | skill_file | blob
    size: int
    sha256: str
    schema_version: int | None


@dataclass(frozen=True, slots=True)
class BackupResult:
    destination: Path
    did: str
    files: tuple[ManifestFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    home: Path
    did: str
    moved_aside: Path | None
    report: ReindexReport


@dataclass(frozen=True, slots=True)
class _Item:
    source: Path
    rel: str
    kind: str

    @property
    def is_database(self) -> bool:
        return self.kind in ("node", "room", "skill")


def _size_with_wal(path: Path) -> int:
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += candidate.stat().st_size
    return total


def _plan(home: Home) -> list[_Item]:
    items: list[_Item] = []
    if home.blobs.is_dir():
        for walked, _dirs, files in sorted(os.walk(home.blobs)):
            for name in sorted(files):
                source = Path(walked) / name
                rel = source.relative_to(home.root).as_posix()
                items.append(_Item(source, rel, "blob"))
    for base in (home.rooms, home.archived_rooms):
        if not base.is_dir():
            continue
        for room_dir in sorted(base.iterdir()):
            if room_dir.name == "archived" or not (room_dir / "events.db").is_file():
                continue
            rel = room_dir.relative_to(home.root).as_posix()
            items.append(_Item(room_dir / "events.db", f"{rel}/events.db", "room"))
            if (room_dir / "meta.json").is_file():
                items.append(_Item(room_dir / "meta.json", f"{rel}/meta.json", "room_meta"))
    if home.skills.is_dir():
        for path in sorted(home.skills.glob("*.db")):
            items.append(_Item(path, f"skills/{path.name}", "skill"))
        for folder in sorted(p for p in home.skills.iterdir() if p.is_dir()):
            items.extend(_skill_files(home, folder))
    items.append(_Item(home.node_db, "node.db", "node"))
    return items


def _skill_files(home: Home, folder: Path) -> list[_Item]:
    """A skill's own files, with every ``objects/`` file after every other file.

    Git writes objects before the refs that name them and never rewrites an object, so copying
    refs first and objects after means every copied ref names objects the backup holds, even
    while pushes land during the backup.
    """
    items: list[_Item] = []
    for walked, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_TRANSIENT_SUFFIXES):
                continue
            source = Path(walked) / name
            rel = source.relative_to(home.root).as_posix()
            if _SKILL_DATA_PATH.fullmatch(rel) and _safe_segments(rel):
                items.append(_Item(source, rel, "skill_file"))
            else:
                log.warning("backup_skipped_file", path=rel[:200], reason="unsupported name")
    items.sort(key=lambda item: "objects" in PurePosixPath(item.rel).parts[2:])
    return items


def _safe_segments(rel: str) -> bool:
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _header_version(path: Path) -> int:
    """``user_version`` from a database header (bytes 60-63, big-endian)."""
    with path.open("rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StorageError(f"{path.name} is not a SQLite database")
    return int.from_bytes(header[60:64], "big")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _vacuum_into(source: Path, target: Path) -> None:
    conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()


def _copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def write_backup(
    home: Home, destination: Path, *, progress: ProgressSink | None = None
) -> BackupResult:
    """Back ``home`` up into the new directory ``destination`` (blocking)."""
    sink = progress or _Silent()
    summary = inspect_node_db(home.node_db)
    destination = destination.absolute()
    if destination.exists() and not is_empty_dir(destination):
        raise BackupFailed(f"{destination} already exists; choose a new directory")
    staging = staging_home(Home(destination), "backup")
    try:
        items = _plan(home)
        sink.begin(len(items), sum(_size_with_wal(i.source) for i in items))
        files: list[ManifestFile] = []
        for item in items:
            target = staging.root / PurePosixPath(item.rel)
            target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            estimate = _size_with_wal(item.source)
            try:
                if item.is_database:
                    _vacuum_into(item.source, target)
                else:
                    _copy_file(item.source, target)
            except FileNotFoundError:
                if item.kind == "node":
                    raise
                sink.advance(item.rel, estimate)  # removed meanwhile (archived): skip it
                continue
            except (OSError, sqlite3.Error) as exc:
                raise BackupFailed(f"cannot copy {item.rel}: {exc}") from exc
            os.chmod(target, FILE_MODE)
            _fsync(target)
            files.append(
                ManifestFile(
                    path=item.rel,
                    kind=item.kind,
                    size=target.stat().st_size,
                    sha256=_sha256(target),
                    schema_version=_header_version(target) if item.is_database else None,
                )
            )
            sink.advance(item.rel, estimate)
        manifest = {
            "format": FORMAT_VERSION,
            "cis_version": __version__,
            "node_id": summary.identity.node_id,
            "did": summary.identity.did,
            "did_key": summary.identity.did_key,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": [
                {
                    "path": f.path,
                    "kind": f.kind,
                    "size": f.size,
                    "sha256": f.sha256,
                    "schema_version": f.schema_version,
                }
                for f in files
            ],
        }
        manifest_path = staging.root / MANIFEST
        fd = os.open(manifest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
        _fsync(manifest_path)
        for folder, _dirs, _files in os.walk(staging.root):
            os.chmod(folder, DIR_MODE)
            _fsync(Path(folder))
        install_home(staging, Home(destination))
    except BaseException:
        discard_staging(staging)
        sink.end()
        raise
    sink.end()
    log.info(
        "backup_written", destination=str(destination), files=len(files),
        bytes=sum(f.size for f in files),
    )  # fmt: skip
    return BackupResult(destination, summary.identity.did, tuple(files))


# ---------------------------------------------------------------------------- restore


def _load_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RestoreFailed(f"{source} holds no {MANIFEST}; is it a cis-node backup?") from None
    except (OSError, ValueError) as exc:
        raise RestoreFailed(f"cannot read {source / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise RestoreFailed(f"{source / MANIFEST} is not a backup manifest")
    version = manifest.get("format")
    if version != FORMAT_VERSION:
        raise RestoreFailed(
            f"backup format {version!r} is not supported by this cis-node (it reads "
            f"{FORMAT_VERSION}); upgrade cis-node"
        )
    return manifest


def _manifest_files(manifest: dict[str, Any]) -> list[ManifestFile]:
    files: list[ManifestFile] = []
    seen: set[str] = set()
    for entry in manifest["files"]:
        try:
            item = ManifestFile(
                path=str(entry["path"]),
                kind=str(entry["kind"]),
                size=int(entry["size"]),
                sha256=str(entry["sha256"]),
                schema_version=entry.get("schema_version"),
            )
        except (KeyError, TypeError, ValueError):
            raise RestoreFailed(f"{MANIFEST} has a malformed file entry") from None
        allowed = (
            item.path == "node.db"
            or _ROOM_PATH.fullmatch(item.path)
            or _SKILL_PATH.fullmatch(item.path)
            or (_SKILL_DATA_PATH.fullmatch(item.path) and _safe_segments(item.path))
            or (_BLOB_PATH.fullmatch(item.path) and ".." not in item.path.split("/"))
        )
        if not allowed or item.path in seen:
            raise RestoreFailed(f"{MANIFEST} names an unexpected file {item.path[:100]!r}")
        seen.add(item.path)
        files.append(item)
    if "node.db" not in seen:
        raise RestoreFailed(f"{MANIFEST} lists no node.db")
    return files


def _check_database(path: Path, name: str, kind: str | None) -> None:
    """``PRAGMA integrity_check`` and, for our kinds, the schema is not newer than the code."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise RestoreFailed(f"{name} is not a usable database: {exc}") from None
    if verdict != "ok":
        raise RestoreFailed(f"{name} fails its integrity check: {str(verdict)[:200]}")
    known = {"node": node_schema.MIGRATIONS, "room": room_schema.MIGRATIONS}
    if kind in known:
        if version and app_id != application_id(kind):
            raise RestoreFailed(f"{name} is not a CIS {kind} database")
        if version > len(known[kind]):
            raise RestoreFailed(
                f"{name} has {kind} schema version {version}, newer than this cis-node "
                f"supports ({len(known[kind])}); upgrade cis-node"
            )


def verify_backup(source: Path) -> tuple[str, list[ManifestFile]]:
    """Check a backup without changing anything; return its DID and files.

    ``source`` is a backup directory, or a bare ``node.db`` file.
    """
    if source.is_file():
        _check_database(source, source.name, "node")
        summary = inspect_node_db(source)
        bare = ManifestFile("node.db", "node", source.stat().st_size, _sha256(source), None)
        return summary.identity.did, [bare]
    if not source.is_dir():
        raise RestoreFailed(f"{source} does not exist")
    manifest = _load_manifest(source)
    files = _manifest_files(manifest)
    for item in files:
        path = source / PurePosixPath(item.path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise RestoreFailed(f"{item.path} is listed in {MANIFEST} but missing") from None
        if size != item.size:
            raise RestoreFailed(f"{item.path} has {size} bytes, the manifest says {item.size}")
        if _sha256(path) != item.sha256:
            raise RestoreFailed(f"{item.path} does not match its sha256 in {MANIFEST}")
        if item.kind in ("node", "room", "skill"):
            _check_database(path, item.path, item.kind if item.kind != "skill" else None)
    summary = inspect_node_db(source / "node.db")
    if summary.identity.did != manifest.get("did"):
        raise RestoreFailed(f"node.db holds {summary.identity.did}, the manifest names another DID")
    return summary.identity.did, files


def _copy_tree(source: Path, files: list[ManifestFile], staging: Home, sink: ProgressSink) -> None:
    sink.begin(len(files), sum(f.size for f in files))
    for item in files:
        origin = source / PurePosixPath(item.path) if source.is_dir() else source
        target = staging.root / PurePosixPath(item.path)
        target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
        os.chmod(target, FILE_MODE)
        _fsync(target)
        if _sha256(target) != item.sha256:
            raise RestoreFailed(f"{item.path} changed while it was copied")
        sink.advance(item.path, item.size)
    sink.end()


def _walk_dirs(root: Path) -> Iterator[Path]:
    for folder, _dirs, _files in os.walk(root):
        yield Path(folder)


def restore_backup(
    source: Path,
    home: Home,
    *,
    force: bool = False,
    now_ms: int,
    progress: ProgressSink | None = None,
) -> RestoreResult:
    """Restore ``source`` (a backup directory or a bare ``node.db``) into ``home`` (blocking).

    The restored home gets a new ``admin.token`` (tokens are not backed up).
    """
    sink = progress or _Silent()
    source = source.absolute()
    did, files = verify_backup(source)
    if home.root.exists() and not is_empty_dir(home.root) and not force:
        what = "holds a node" if holds_node(home) else "is not empty"
        raise RestoreFailed(f"{home.root} {what}; use --force to move it aside first")
    lock = HomeLock(home, "restore") if home.root.exists() else None
    if lock is not None:
        lock.acquire()  # fails while a node runs on the target
    try:
        staging = staging_home(home, "restore")
        try:
            _copy_tree(source, files, staging, sink)
            create_layout(staging)
            write_admin_token(staging)
            store = NodeStore.open(staging, create=False)
            try:
                if store.load_identity().did != did:
                    raise RestoreFailed("the restored node.db holds another identity")
                report = reindex(staging, store, full=True, now_ms=now_ms)
                store.end_run(now_ms, report.stream_max)
            finally:
                store.close()
            for folder in _walk_dirs(staging.root):
                os.chmod(folder, DIR_MODE)
            replace = home.root.exists() and not is_empty_dir(home.root)
            moved = move_aside(home) if replace else None
            try:
                install_home(staging, home)
            except BaseException:
                if moved is not None:
                    os.rename(moved, home.root)  # put the old home back
                raise
        except BaseException:
            discard_staging(staging)
            raise
    finally:
        if lock is not None:
            lock.release()
    log.info(
        "backup_restored", home=str(home.root), did=did, rooms=report.rooms_checked,
        rooms_missing=report.rooms_missing, moved_aside=str(moved) if moved else None,
    )  # fmt: skip
    return RestoreResult(home.root, did, moved, report)
