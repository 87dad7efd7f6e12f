"""Shared fixtures. Tests never touch the real ~/.cis: CIS_HOME points into a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("cis-home-env")
    monkeypatch.setenv("CIS_HOME", str(home / "home"))
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def cis_home(tmp_path: Path) -> Path:
    """A path for a node home that does not exist yet."""
    return tmp_path / "cishome"
