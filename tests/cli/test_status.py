from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cis.cli.main import main

KEYS = {
    "node_id", "did", "did_key", "server_name", "version", "running", "listen", "uptime_s",
    "rooms", "storage",
}  # fmt: skip


@pytest.fixture
def home(cis_home: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--home", str(cis_home), "--node-name", "alpha"]) == 0
    capsys.readouterr()
    return cis_home


def test_status_of_a_stopped_node(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--home", str(home), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status) == KEYS
    assert status["running"] is False and status["listen"] is None and status["uptime_s"] is None
    assert status["rooms"] == 0 and status["storage"]["node_db_bytes"] > 0
    assert main(["status", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert "running:     no" in text and f"did:         {status['did']}" in text


def test_status_without_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--home", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no node in ") and "cis-node init" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_a_node_db_from_a_newer_cis_node_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(home / "node.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    backup = ["backup", str(home.parent / "b")]
    for args in (["status"], ["run", "--listen", "127.0.0.1:0"], backup):
        assert main([*args, "--home", str(home)]) == 1
        err = capsys.readouterr().err
        assert "schema version 99, newer than this cis-node supports" in err, args
        assert err.count("\n") == 1 and "Traceback" not in err
