from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cis.home import Home, resolve_home, room_dir_name


def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CIS_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("CIS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_home(None) == tmp_path / "user" / ".cis"


def test_room_dir_is_a_hash_prefix() -> None:
    room_id = "!a/B:n1.cis.local"
    assert room_dir_name(room_id) == hashlib.sha256(room_id.encode()).hexdigest()[:32]
    assert room_dir_name("!a:x") != room_dir_name("!A:x")
    home = Home(Path("/h"))
    assert home.room_dir(room_id) == Path("/h/rooms") / room_dir_name(room_id)
    assert home.skill_db("git") == Path("/h/skills/git.db")
