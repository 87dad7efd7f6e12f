"""The stock ``git`` binary driven by tests: a ``Git`` runner with an environment that finds
``git-remote-cis`` and one node's home, and a way to damage a repository's object store."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from dulwich.object_store import DiskObjectStore

BIN = Path(sys.executable).parent


@dataclass
class Git:
    env: dict[str, str]

    def __call__(
        self, *args: str, cwd: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{done.stderr}")
        return done

    def popen(self, *args: str, cwd: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["git", *args], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def refs(self, repo: Path) -> dict[str, str]:
        out = self("show-ref", "--head", cwd=repo, check=False).stdout
        return {name: sha for sha, name in (line.split() for line in out.splitlines())}

    def remote_refs(self, url: str, cwd: Path) -> dict[str, str]:
        out = self("ls-remote", url, cwd=cwd).stdout
        pairs = (line.split() for line in out.splitlines())
        return {name: sha for sha, name in pairs if not name.endswith("^{}")}

    def commit(self, repo: Path, name: str, content: str = "") -> str:
        (repo / name).write_text(content or f"{name}\n")
        self("add", name, cwd=repo)
        self("commit", "-q", "-m", f"add {name}", cwd=repo)
        return self("rev-parse", "HEAD", cwd=repo).stdout.strip()


def git_env(home: Path, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CIS_HOME": str(home),
        "HOME": str(tmp),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_TERMINAL_PROMPT": "0",
    }  # fmt: skip


def explode_and_corrupt(objects: Path, victim: str, raw: bytes) -> None:
    """Unpack every object of the store into loose objects, then replace ``victim``'s with
    ``raw`` (a valid loose object whose content does not hash to its name)."""
    store = DiskObjectStore(str(objects))
    everything = [store[sha] for sha in list(iter(store))]
    store.close()
    for pack_file in (objects / "pack").iterdir():
        pack_file.unlink()
    loose = DiskObjectStore(str(objects))
    for obj in everything:
        loose.add_object(obj)
    loose.close()
    path = objects / victim[:2] / victim[2:]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(raw))
