"""How subcommands reach the running node's admin API (found through ``run/node.json``,
authenticated with ``admin.token``), or learn that no node runs on the home."""

from __future__ import annotations

from typing import Any

from cis.errors import CisError
from cis.home import Home

_TIMEOUT_S = 30.0


class AdminCallFailed(CisError):
    """The running node refused or did not answer (the message says why)."""


def running_url(home: Home) -> str | None:
    """The running node's URL, or None when no node holds the home's lock."""
    from cis.node import read_runtime_file
    from cis.storage.lock import running_pid

    if running_pid(home) is None:
        return None
    runtime = read_runtime_file(home)
    url = runtime.get("url") if runtime else None
    return url if isinstance(url, str) and url.startswith("http://") else None


def call(home: Home, url: str, method: str, path: str, body: Any = None) -> Any:
    import httpx

    try:
        token = home.admin_token.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise AdminCallFailed(f"cannot read {home.admin_token}: {exc.strerror or exc}") from None
    try:
        response = httpx.request(
            method,
            f"{url}/_cis/admin/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=_TIMEOUT_S,
        )
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise AdminCallFailed(f"the running node did not answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        error = answer.get("error", "request failed") if isinstance(answer, dict) else "failed"
        raise AdminCallFailed(f"{error} ({response.status_code})")
    return answer
