"""Two nodes in one process, their Git skills exchanging through peer calls carried by an
in-process transport (in place of federation's tunnels), driven by the real ``git``: clone
through another node, push carried to the home node, races, refusals, the home node down, and
a corrupted pack refused."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cis.config import load_config
from cis.home import Home
from cis.identity import NodeIdentity
from cis.node import Node
from cis.skills.host import SkillHost
from cis.skills.peers import PeerUnreachable
from cis.storage.homes import initialise_home, write_admin_token
from tests.skills.helpers import eventually

BIN = Path(sys.executable).parent
URL = "cis://alpha/voxel-engine"


@dataclass
class Loopback:
    """Carries peer calls between in-process hosts as bytes, like a tunnel would."""

    hosts: dict[str, SkillHost] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    tamper: Callable[[str, bytes], bytes] | None = None
    calls: list[str] = field(default_factory=list)
    trust: int = 1
    """The level each node's skills are told it trusts the other at (1: admitted read-only).
    The nodes' own default trust is 2, so federation's policy lets the local ``admit`` command
    raise beta to 50 later in the test."""

    def transport(self, caller: str) -> Endpoint:
        return Endpoint(self, caller)


@dataclass
class Endpoint:
    net: Loopback
    caller: str

    async def call(self, node_id: str, skill: str, method: str, body: bytes) -> bytes:
        net = self.net
        if node_id in net.down or self.caller in net.down or node_id not in net.hosts:
            raise PeerUnreachable(f"no tunnel to {node_id}")
        net.calls.append(f"{self.caller}->{node_id}:{method}")
        answer = await net.hosts[node_id].handle_peer_call(self.caller, skill, method, bytes(body))
        return net.tamper(method, answer) if net.tamper is not None else answer

    def trust_level(self, node_id: str) -> int:
        return self.net.trust


@dataclass
class Pair:
    alpha: Node
    beta: Node
    net: Loopback
    tmp: Path

    def env(self, node: Node) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "CIS_HOME": str(node.home.root),
            "HOME": str(self.tmp),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
            "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.org",
        }  # fmt: skip

    async def git(
        self, node: Node, *args: str, cwd: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(
            subprocess.run, ["git", *args], cwd=cwd, env=self.env(node), capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{done.stderr}")
        return done

    async def commit(self, node: Node, repo: Path, name: str) -> str:
        (repo / name).write_text(f"{name}\n")
        await self.git(node, "add", name, cwd=repo)
        await self.git(node, "commit", "-q", "-m", name, cwd=repo)
        return (await self.git(node, "rev-parse", "HEAD", cwd=repo)).stdout.strip()

    async def remote(self, node: Node, url: str = URL) -> dict[str, str]:
        out = (await self.git(node, "ls-remote", url, cwd=self.tmp)).stdout
        pairs = (line.split() for line in out.splitlines())
        return {name: sha for sha, name in pairs if not name.endswith("^{}")}

    async def local(self, node: Node, repo: Path) -> dict[str, str]:
        out = (await self.git(node, "show-ref", cwd=repo)).stdout
        return {name: sha for sha, name in (line.split() for line in out.splitlines())}


async def start(tmp: Path, name: str, net: Loopback) -> Node:
    home = Home(tmp / name)
    home.root.mkdir()
    initialise_home(home, NodeIdentity.generate(name), 0)
    write_admin_token(home)
    config = load_config(
        home,
        flags={"--listen": "127.0.0.1:0"},
        environ={"CIS_SKILLS": "git", "CIS_DEFAULT_TRUST": "2"},
    )
    node = Node(home, config)
    await node.start()
    host = node.skills
    assert host is not None
    assert host.has_gateway  # the node's own event creation
    host.set_peer_transport(net.transport(name))
    net.hosts[name] = host
    return node


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    net = Loopback()
    alpha = await start(tmp_path, "alpha", net)
    beta = await start(tmp_path, "beta", net)
    try:
        yield Pair(alpha, beta, net, tmp_path)
    finally:
        await beta.stop()
        await alpha.stop()


async def test_clone_push_and_fetch_through_another_node(pair: Pair) -> None:
    alpha, beta, tmp = pair.alpha, pair.beta, pair.tmp
    origin = tmp / "origin"
    await pair.git(alpha, "init", "-q", "-b", "main", str(origin), cwd=tmp)
    for number in range(4):
        await pair.commit(alpha, origin, f"file{number}")
    await pair.git(alpha, "branch", "feature", "HEAD~1", cwd=origin)
    await pair.git(alpha, "tag", "-a", "v1", "-m", "v1", "HEAD~2", cwd=origin)
    await pair.git(alpha, "push", "-q", URL, "--all", cwd=origin)
    await pair.git(alpha, "push", "-q", URL, "--tags", cwd=origin)
    alpha_host = alpha.skills
    assert alpha_host is not None

    # Clone on beta (beta asks alpha to admit it, which at trust level 1 gives power 0, then
    # replicates from alpha and serves from its replica).
    clone = tmp / "clone-b"
    await pair.git(beta, "clone", "-q", URL, str(clone), cwd=tmp)
    await pair.git(beta, "fsck", "--strict", cwd=clone)
    origin_refs = await pair.local(alpha, origin)
    assert await pair.remote(beta) == {**origin_refs, "HEAD": origin_refs["refs/heads/main"]}

    # Pushing needs the power alpha gives beta's sovereign user when it admits beta.
    new = await pair.commit(beta, clone, "from-beta")
    refused = await pair.git(beta, "push", "origin", "main", cwd=clone, check=False)
    assert refused.returncode != 0 and "node beta may not push to voxel-engine" in refused.stderr
    admitted = await alpha_host.call_command(
        "git", "admit", {"repo": "voxel-engine", "node": "beta", "may_push": True}
    )
    assert admitted["power"] == 50

    # Now the push is carried to alpha, which alone moves the ref.
    await pair.git(beta, "push", "-q", "origin", "main", cwd=clone)
    assert (await pair.remote(alpha))["refs/heads/main"] == new
    await pair.git(alpha, "fetch", "-q", URL, "main", cwd=origin)
    await pair.git(alpha, "merge", "-q", "--ff-only", "FETCH_HEAD", cwd=origin)
    await pair.git(alpha, "fsck", "--strict", cwd=origin)
    assert (await pair.local(alpha, origin))["refs/heads/main"] == new
    assert await pair.remote(alpha) == await pair.remote(beta)

    # The push event names beta's sovereign user; the git tables join with the room's events.
    runtime = alpha_host.runtime("git")
    assert runtime is not None and runtime.api is not None
    room = "!git.voxel-engine:alpha.cis.local"

    async def announced() -> bool:
        rows = await runtime.api.database.query(  # type: ignore[union-attr]
            """SELECT r.name, e.sender, json_extract(CAST(e.pdu AS TEXT), '$.content.pusher')
                 FROM refs AS r JOIN room.events AS e
                   ON e.type = 'io.cis.git.push'
                  AND json_extract(CAST(e.pdu AS TEXT), '$.content.ref') = r.name
                  AND json_extract(CAST(e.pdu AS TEXT), '$.content.new') = r.sha
                WHERE r.repo = ? AND r.name = 'refs/heads/main'""",
            ("voxel-engine",),
            attach={"room": f"room:{room}"},
        )
        return rows == [("refs/heads/main", "@cis:alpha.cis.local", "@cis:beta.cis.local")]

    await eventually(announced, what="the push event of beta's push")

    # Not a fast-forward through beta: refused; forced: accepted by alpha.
    await pair.git(beta, "reset", "-q", "--hard", "HEAD~1", cwd=clone)
    rewritten = await pair.commit(beta, clone, "rewritten")
    refused = await pair.git(beta, "push", "origin", "main", cwd=clone, check=False)
    assert refused.returncode != 0 and "rejected" in refused.stderr
    await pair.git(beta, "push", "-q", "--force", "origin", "main", cwd=clone)
    assert (await pair.remote(alpha))["refs/heads/main"] == rewritten

    # Two concurrent pushes to one ref, from alpha and from beta: exactly one ok.
    await pair.git(alpha, "fetch", "-q", URL, "main", cwd=origin)
    await pair.git(alpha, "reset", "-q", "--hard", "FETCH_HEAD", cwd=origin)
    await pair.git(beta, "pull", "-q", "--ff-only", "origin", "main", cwd=clone)
    await pair.commit(alpha, origin, "race-alpha")
    await pair.commit(beta, clone, "race-beta")
    results = await asyncio.gather(
        pair.git(alpha, "push", URL, "main", cwd=origin, check=False),
        pair.git(beta, "push", "origin", "main", cwd=clone, check=False),
    )
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.stderr for r in results]

    # Alpha down: a clone through beta is served from beta's replica; a push fails clearly.
    pair.net.down.add("alpha")
    served = await pair.git(beta, "clone", URL, str(tmp / "while-down"), cwd=tmp)
    assert "home node alpha unreachable; serving this node's replica" in served.stderr
    await pair.git(beta, "fsck", "--strict", cwd=tmp / "while-down")
    await pair.commit(beta, clone, "while-down")
    blocked = await pair.git(
        beta, "push", "origin", "HEAD:refs/heads/other", cwd=clone, check=False
    )
    assert blocked.returncode != 0
    assert "fatal: cis: home node alpha unreachable" in blocked.stderr
    pair.net.down.clear()


async def test_a_corrupted_pack_from_a_peer_is_refused(pair: Pair) -> None:
    alpha, beta, tmp = pair.alpha, pair.beta, pair.tmp
    origin = tmp / "origin"
    await pair.git(alpha, "init", "-q", "-b", "main", str(origin), cwd=tmp)
    first = await pair.commit(alpha, origin, "one")
    await pair.git(alpha, "push", "-q", URL, "main", cwd=origin)
    await pair.git(beta, "clone", "-q", URL, str(tmp / "b"), cwd=tmp)  # beta's replica: one
    await pair.commit(alpha, origin, "two")
    await pair.git(alpha, "push", "-q", URL, "main", cwd=origin)

    def corrupt(method: str, answer: bytes) -> bytes:
        if method != "fetch":
            return answer
        damaged = bytearray(answer)
        damaged[len(damaged) // 2 + 40] ^= 0xFF  # inside the pack data
        return bytes(damaged)

    pair.net.tamper = corrupt
    refused = await pair.git(beta, "clone", URL, str(tmp / "bad"), cwd=tmp, check=False)
    assert refused.returncode != 0
    assert "refused the pack from alpha" in refused.stderr
    pair.net.tamper = None
    beta_host = beta.skills
    assert beta_host is not None
    [row] = (await beta_host.call_command("git", "list", {}))["repositories"]
    assert (row["repo"], row["home_node"]) == ("voxel-engine@alpha", "alpha")
    db = beta.home.skill_db("git")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        held = conn.execute(
            "SELECT sha FROM refs WHERE repo = 'voxel-engine@alpha' AND name = 'refs/heads/main'"
        ).fetchall()
    assert held == [(first,)]  # the replica did not move
    second = (await pair.remote(alpha))["refs/heads/main"]
    assert (await pair.remote(beta))["refs/heads/main"] == second  # the peer behaves again
