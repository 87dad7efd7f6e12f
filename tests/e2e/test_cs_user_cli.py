"""``cis-node user add``: offline it writes node.db, online it goes through the admin API; the
admin API shows the node's DID for a user; a closed node refuses registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO, Processes, cis_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

V3 = "/_matrix/client/v3"


def user_add(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cis", "user", "add", "--home", str(home), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip


def login(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{url}{V3}/login",
        json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
              "password": password},
        timeout=30,
    )  # fmt: skip


def test_user_add_offline_and_online(processes: Processes, node_home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("offline-secret\n")
    offline = user_add(node_home, "alice", "--password-file", str(secret))
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == "created @alice:alpha.cis.local"
    again = user_add(node_home, "alice", "--password-file", str(secret))
    assert again.returncode == 1 and again.stderr.startswith("error: ")
    assert "offline-secret" not in again.stderr + again.stdout

    node = processes.run_node(node_home, "--log-level", "warning")  # registration closed
    online = user_add(node_home, "bob", "--admin", "--password-stdin", stdin="online-secret\n")
    assert online.returncode == 0, online.stderr
    assert online.stdout.strip() == "created @bob:alpha.cis.local (server admin)"
    assert login(node.url, "alice", "offline-secret").status_code == 200
    assert login(node.url, "bob", "online-secret").status_code == 200
    assert login(node.url, "bob", "wrong").status_code == 403
    # The system user exists and cannot log in.
    assert login(node.url, "cis", "").status_code in (400, 403)
    closed = httpx.post(
        f"{node.url}{V3}/register",
        json={"username": "eve", "password": "x", "auth": {"type": "m.login.dummy"}},
        timeout=30,
    )
    assert closed.status_code == 403 and closed.json()["errcode"] == "M_FORBIDDEN"

    admin = {"Authorization": f"Bearer {node.admin_token}"}
    shown = httpx.get(
        f"{node.url}/_cis/admin/v1/users/@bob:alpha.cis.local", headers=admin, timeout=30
    )
    status = httpx.get(f"{node.url}/_cis/admin/v1/status", timeout=30).json()
    assert shown.json()["did"] == status["did"] and shown.json()["admin"] is True
    assert (
        httpx.get(f"{node.url}/_cis/admin/v1/users/@bob:alpha.cis.local", timeout=30).status_code
        == 401
    )
    missing = httpx.get(
        f"{node.url}/_cis/admin/v1/users/@nobody:alpha.cis.local", headers=admin, timeout=30
    )
    assert missing.status_code == 404 and missing.json()["errcode"] == "M_NOT_FOUND"
    assert node.stop() == 0
    assert cis_node("status", "--home", str(node_home)).returncode == 0
