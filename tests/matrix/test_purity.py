"""``cis.matrix`` is pure: no event loop, database, sockets, clocks, threads, files or network.
Checked on the source, so a later import cannot slip in unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

import cis.matrix

FORBIDDEN = {
    "asyncio", "sqlite3", "socket", "ssl", "select", "selectors", "threading", "multiprocessing",
    "concurrent", "subprocess", "time", "datetime", "os", "pathlib", "io", "shutil", "tempfile",
    "urllib", "http", "httpx", "websockets", "random", "secrets", "logging", "cis.clock",
    "cis.storage", "cis.log", "cis.home",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}

PACKAGE = Path(cis.matrix.__file__).parent


def _modules() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 10
    return files


def test_no_impure_imports_or_calls() -> None:
    problems = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                    problems.append(f"{path.name}: imports {name}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                problems.append(f"{path.name}:{node.lineno}: calls {node.func.id}()")
            if isinstance(node, ast.AsyncFunctionDef | ast.Await):
                problems.append(f"{path.name}:{node.lineno}: async code")
    assert problems == []


def test_public_surface() -> None:
    for name in cis.matrix.__all__:
        assert hasattr(cis.matrix, name), name
    for required in [
        "compute_content_hash", "check_content_hash", "compute_event_id", "redact", "sign_event",
        "verify_event_signature", "check_auth", "check_auth_events_selection", "parse_pdu",
        "build_event", "resolve_state", "MatrixError", "InvalidPdu", "SignatureError",
        "AuthError", "UnsupportedRoomVersion", "MissingEvents",
    ]:  # fmt: skip
        assert required in cis.matrix.__all__, required
    from cis.errors import CisError
    from cis.matrix.state_res import resolve_state

    assert issubclass(cis.matrix.MatrixError, CisError)
    assert resolve_state is cis.matrix.resolve_state
