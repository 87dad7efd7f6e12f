"""How local tools (``cis-node skills|memory|git``, ``git-remote-cis``) reach the running node.

The node writes ``$CIS_HOME/run/node.json`` (``{"pid", "url"}``) while it runs and keeps
``$CIS_HOME/admin.token`` (0600); tools send the token as ``Authorization: Bearer …`` (never in
a URL, so it never reaches a log). This module stays light (no HTTP library at import) because
``git-remote-cis`` imports it on every git operation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Final

from cis.errors import CisError
from cis.home import Home

__all__ = ["LocalNode", "NoNodeRunning", "call_command", "find_local_node", "get_json"]

TIMEOUT_S: Final = 60.0


class NoNodeRunning(CisError):
    """No node runs on the home (or its runtime file is stale)."""

    def __init__(self, home: Home) -> None:
        super().__init__(f"no node running for CIS_HOME={home.root}")
        self.home = home


class LocalCallFailed(CisError):
    """The node answered a local tool's request with an error (the message is the node's)."""


@dataclass(frozen=True, slots=True)
class LocalNode:
    home: Home
    url: str
    token: str = ""

    def ws_url(self, path: str) -> str:
        return "ws://" + self.url.removeprefix("http://") + path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def find_local_node(home: Home) -> LocalNode:
    """The running node of ``home``; ``NoNodeRunning`` when its runtime file is absent, names
    another process that is gone, or the admin token cannot be read."""
    try:
        runtime = json.loads(home.runtime_file.read_text(encoding="utf-8"))
        token = home.admin_token.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        raise NoNodeRunning(home) from None
    url = runtime.get("url") if isinstance(runtime, dict) else None
    pid = runtime.get("pid") if isinstance(runtime, dict) else None
    if not isinstance(url, str) or not url.startswith("http://") or not token:
        raise NoNodeRunning(home)
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:  # left behind by a node killed with -9
            raise NoNodeRunning(home) from None
        except PermissionError:
            pass  # someone else's process: let the connection decide
    return LocalNode(home, url.rstrip("/"), token)


def _error_of(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"the node answered {response.status_code}"


def get_json(node: LocalNode, path: str) -> dict[str, Any]:
    return _request(node, "GET", f"{node.url}{path}", None)


def call_command(node: LocalNode, skill: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a skill's command on the running node; ``LocalCallFailed`` carries its refusal."""
    url = f"{node.url}/_cis/admin/v1/skills/{skill}/commands/{command}"
    return _request(node, "POST", url, args)


def _request(node: LocalNode, method: str, url: str, args: dict[str, Any] | None) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.request(method, url, headers=node.headers, json=args, timeout=TIMEOUT_S)
    except httpx.HTTPError:
        raise NoNodeRunning(node.home) from None
    if response.status_code != 200:
        raise LocalCallFailed(_error_of(response))
    body = response.json()
    if not isinstance(body, dict):
        raise LocalCallFailed("the node answered with something other than an object")
    return body
