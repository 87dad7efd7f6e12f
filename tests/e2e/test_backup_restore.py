"""``cis-node backup`` while a node writes, and ``restore`` into a new home, as real processes."""

from __future__ import annotations

import hashlib
import json
import signal
import stat
import threading
import time
from pathlib import Path

import pytest

from cis.storage import node_schema
from cis.storage.rooms import schema as room_schema
from tests.consistency import check_home
from tests.e2e.conftest import Processes, cis_node, wait_for

pytestmark = pytest.mark.e2e


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (to prove a tree was not touched)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _start_writer(processes: Processes, home: Path) -> tuple[object, set[str], threading.Thread]:
    writer = processes.writer(home)
    acked: set[str] = set()

    def read() -> None:
        assert writer.stdout is not None
        for line in writer.stdout:
            if line.startswith("ack "):
                acked.add(line[4:].strip())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return writer, acked, thread


def test_backup_while_writing_then_restore_into_a_new_home(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    writer, acked, reader = _start_writer(processes, node_home)
    wait_for(lambda: len(acked) >= 500, 60, "500 acknowledged events")
    before_backup = set(acked)
    dest = tmp_path / "backup"
    started = time.monotonic()
    result = cis_node("backup", "--home", str(node_home), str(dest), timeout=120)
    assert result.returncode == 0, result.stderr
    assert writer.poll() is None, "the writer must still be running"  # type: ignore[attr-defined]
    during = len(acked) - len(before_backup)
    writer.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    writer.wait(timeout=10)  # type: ignore[attr-defined]
    reader.join(timeout=10)
    assert during > 0, "no event was written while the backup ran"
    assert "backed up did:cis:alpha:" in result.stdout
    took = time.monotonic() - started

    # The backup: 0700 directories, 0600 files, a manifest whose sizes and hashes hold.
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["format"] == 1 and manifest["did"].startswith("did:cis:alpha:")
    paths = [f["path"] for f in manifest["files"]]
    assert paths[-1] == "node.db" and sum(p.endswith("/events.db") for p in paths) == 3
    for entry in manifest["files"]:
        path = dest / entry["path"]
        assert path.stat().st_size == entry["size"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        if entry["path"] == "node.db":
            assert entry["schema_version"] == len(node_schema.MIGRATIONS)
        elif entry["path"].endswith(".db"):
            assert entry["schema_version"] == len(room_schema.MIGRATIONS)
    for folder in [dest, *[p for p in dest.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    # Restore into a new home: the same identity, every event acknowledged before the backup.
    restored = tmp_path / "restored"
    result = cis_node("restore", str(dest), "--home", str(restored))
    assert result.returncode == 0, result.stderr
    check = check_home(restored)
    assert before_backup <= check.all_events
    original = json.loads(cis_node("status", "--home", str(node_home), "--json").stdout)
    status = json.loads(cis_node("status", "--home", str(restored), "--json").stdout)
    assert (status["did"], status["did_key"]) == (original["did"], original["did_key"])
    assert status["rooms"] == 3 and status["running"] is False
    node = processes.run_node(restored)
    assert node.get("/_cis/admin/v1/status").json()["did"] == original["did"]
    assert "unclean_stop_detected" not in node.log()  # a restore leaves a clean home
    assert node.stop() == 0
    assert took < 120


def test_a_failed_restore_leaves_the_target_untouched(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    writer = processes.writer(node_home, "--limit", "200")
    assert writer.wait(timeout=60) == 0
    dest = tmp_path / "backup"
    assert cis_node("backup", "--home", str(node_home), str(dest)).returncode == 0
    target = tmp_path / "target"
    assert cis_node("init", "--home", str(target), "--node-name", "beta").returncode == 0
    untouched = _tree(target)
    siblings = sorted(p.name for p in tmp_path.iterdir())

    # Without --force an existing node is never replaced.
    refused = cis_node("restore", str(dest), "--home", str(target))
    assert refused.returncode == 1
    assert refused.stderr == f"error: {target} holds a node; use --force to move it aside first\n"

    # A corrupted room file fails verification before anything changes.
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    room_file = dest / next(f["path"] for f in manifest["files"] if f["kind"] == "room")
    data = bytearray(room_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    room_file.write_bytes(bytes(data))
    failed = cis_node("restore", str(dest), "--home", str(target), "--force")
    assert failed.returncode == 1
    assert "does not match its sha256" in failed.stderr and failed.stderr.count("\n") == 1
    assert "Traceback" not in failed.stderr
    assert _tree(target) == untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no staging left behind


def test_a_bare_node_db_restores_the_identity_and_marks_rooms_missing(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    writer = processes.writer(node_home, "--limit", "100")
    assert writer.wait(timeout=60) == 0
    dest = tmp_path / "backup"
    assert cis_node("backup", "--home", str(node_home), str(dest)).returncode == 0
    restored = tmp_path / "restored"
    result = cis_node("restore", str(dest / "node.db"), "--home", str(restored))
    assert result.returncode == 0, result.stderr
    assert "3 missing" in result.stdout
    status = cis_node("status", "--home", str(restored))
    assert "(3 missing" in status.stdout
    as_json = json.loads(cis_node("status", "--home", str(restored), "--json").stdout)
    original = json.loads(cis_node("status", "--home", str(node_home), "--json").stdout)
    assert as_json["did"] == original["did"] and as_json["rooms"] == 3
    check_home(restored)  # no index rows for the missing rooms
