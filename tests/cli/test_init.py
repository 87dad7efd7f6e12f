from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cis.cli.main import main
from cis.home import Home
from cis.storage.lock import HomeLock
from cis.storage.node_store import inspect_node_db


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_private_home(cis_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--home", str(cis_home), "--node-name", "munin-macmini"]) == 0
    out = capsys.readouterr().out
    summary = inspect_node_db(cis_home / "node.db")
    identity = summary.identity
    assert identity.node_id == "munin-macmini"
    assert identity.server_name == "munin-macmini.cis.local"
    assert identity.did == f"did:cis:munin-macmini:{identity.public_key.hex()[:16]}"
    assert identity.did_key.startswith("did:key:z6Mk")
    assert f"did:         {identity.did}" in out
    assert _mode(cis_home) == 0o700
    assert _mode(cis_home / "node.db") == 0o600
    assert _mode(cis_home / "admin.token") == 0o600
    assert len((cis_home / "admin.token").read_text().strip()) >= 32
    for folder in ("rooms", "blobs", "skills", "run"):
        assert _mode(cis_home / folder) == 0o700
    assert sorted(p.name for p in cis_home.parent.iterdir()) == [cis_home.name]  # no staging


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "trail-", "a" * 64, "dots.not.ok", ""])
def test_a_bad_name_is_one_line_and_changes_nothing(
    cis_home: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert main(["init", "--home", str(cis_home), "--node-name", name]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: invalid node name") and err.count("\n") == 1
    assert not cis_home.exists()
    assert list(cis_home.parent.iterdir()) == []


def test_an_existing_home_needs_force_which_moves_it_aside(
    cis_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--home", str(cis_home), "--node-name", "alpha"]) == 0
    first = inspect_node_db(cis_home / "node.db").identity
    capsys.readouterr()
    assert main(["init", "--home", str(cis_home), "--node-name", "beta"]) == 1
    expected = f"error: {cis_home} holds a node; use --force to move it aside\n"
    assert capsys.readouterr().err == expected
    assert inspect_node_db(cis_home / "node.db").identity.did == first.did
    assert main(["init", "--home", str(cis_home), "--node-name", "beta", "--force"]) == 0
    assert "moved the previous home aside" in capsys.readouterr().out
    assert inspect_node_db(cis_home / "node.db").identity.node_id == "beta"
    aside = [p for p in cis_home.parent.iterdir() if p.name.startswith(f"{cis_home.name}.bak-")]
    assert len(aside) == 1
    assert inspect_node_db(aside[0] / "node.db").identity.did == first.did  # never deleted


def test_force_is_refused_while_the_home_is_locked(
    cis_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--home", str(cis_home), "--node-name", "alpha"]) == 0
    with HomeLock(Home(cis_home), "run"):
        assert main(["init", "--home", str(cis_home), "--node-name", "beta", "--force"]) == 1
    assert "in use by another cis-node" in capsys.readouterr().err
    assert inspect_node_db(cis_home / "node.db").identity.node_id == "alpha"
    assert [p.name for p in cis_home.parent.iterdir()] == [cis_home.name]


def test_if_missing_derives_the_name_and_does_nothing_the_second_time(
    cis_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "Munin's MacMini.local")
    assert main(["init", "--home", str(cis_home), "--if-missing"]) == 0
    assert inspect_node_db(cis_home / "node.db").identity.node_id == "munin-s-macmini"
    before = (cis_home / "node.db").read_bytes()
    capsys.readouterr()
    assert main(["init", "--home", str(cis_home), "--if-missing"]) == 0
    assert "already holds node munin-s-macmini" in capsys.readouterr().out
    assert (cis_home / "node.db").read_bytes() == before


def test_usage_errors_exit_2(cis_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--home", str(cis_home)]) == 2
    assert capsys.readouterr().err == "error: missing option --node-name\n"
    assert main(["init", "--home", str(cis_home), "--force", "--if-missing"]) == 2
    assert not cis_home.exists()


def test_home_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv("CIS_HOME", str(target))
    assert main(["init", "--node-name", "alpha"]) == 0
    assert (target / "node.db").exists()
    assert main(["status", "--json"]) == 0
    assert '"node_id": "alpha"' in capsys.readouterr().out


def test_an_empty_existing_directory_becomes_the_home(cis_home: Path) -> None:
    cis_home.mkdir()
    os.chmod(cis_home, 0o755)
    assert main(["init", "--home", str(cis_home), "--node-name", "alpha"]) == 0
    assert _mode(cis_home) == 0o700
