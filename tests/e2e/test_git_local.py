"""The Git skill with the real ``git`` binary against a real ``cis-node run``: push, clone,
fetch, refusals, races and limits, all on one node (across nodes: ``test_git_federated``)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Processes, RunningNode, cis_node
from tests.e2e.git_helpers import Git, explode_and_corrupt, git_env
from tests.skills.helpers import start_node

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
MAX_INPUT = 300_000


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """One node for the tests of this module (each uses repositories of its own)."""
    tmp = tmp_path_factory.mktemp("git-node")
    home = tmp / "home"
    created = cis_node("init", "--home", str(home), "--node-name", "alpha")
    assert created.returncode == 0, created.stderr
    (home / "config.toml").write_text(
        f"[skills.git]\nmax_input_size = {MAX_INPUT}\n", encoding="utf-8"
    )
    processes = Processes(tmp)
    try:
        running = processes.run_node(home)
        yield running
        assert running.stop() == 0, running.log()
    finally:
        processes.cleanup()


def test_push_clone_fetch_and_refusals(node: RunningNode, tmp_path: Path) -> None:
    git = Git(git_env(node.home, tmp_path))
    url = "cis://alpha/voxel-engine"
    origin = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    for number in range(5):
        git.commit(origin, f"file{number}")
    git("branch", "feature", "HEAD~2", cwd=origin)
    git("tag", "-a", "v1.0", "-m", "first release", "HEAD~1", cwd=origin)
    pushed = git("push", url, "--all", cwd=origin)
    assert "remote: cis: received" in pushed.stderr  # progress reaches git's stderr
    git("push", url, "--tags", cwd=origin)

    clone = tmp_path / "clone"
    git("clone", "-q", url, str(clone), cwd=tmp_path)
    git("fsck", "--strict", cwd=clone)
    remote = git.remote_refs(url, tmp_path)
    assert remote["HEAD"] == remote["refs/heads/main"] == git.refs(origin)["refs/heads/main"]
    assert {k: v for k, v in remote.items() if k != "HEAD"} == {
        k: v for k, v in git.refs(origin).items() if k != "HEAD"
    }
    assert git("symbolic-ref", "HEAD", cwd=clone).stdout.strip() == "refs/heads/main"

    # A commit made in the clone and pushed, fetched in the original repository.
    new = git.commit(clone, "from-clone")
    git("push", "-q", "origin", "main", cwd=clone)
    git("fetch", "-q", url, "main", cwd=origin)
    assert git("rev-parse", "FETCH_HEAD", cwd=origin).stdout.strip() == new
    git("merge", "-q", "--ff-only", "FETCH_HEAD", cwd=origin)
    git("fsck", "--strict", cwd=origin)

    # Not a fast-forward: refused; forced: accepted.
    git("reset", "-q", "--hard", "HEAD~1", cwd=origin)
    rewritten = git.commit(origin, "rewritten")
    refused = git("push", url, "main", cwd=origin, check=False)
    assert refused.returncode != 0 and "rejected" in refused.stderr
    assert git.remote_refs(url, tmp_path)["refs/heads/main"] == new
    git("push", "-q", "--force", url, "main", cwd=origin)
    assert git.remote_refs(url, tmp_path)["refs/heads/main"] == rewritten

    # Deleting a branch, and a push over receive.maxInputSize.
    git("push", "-q", url, ":feature", cwd=origin)
    assert "refs/heads/feature" not in git.remote_refs(url, tmp_path)
    (origin / "big.bin").write_bytes(os.urandom(MAX_INPUT * 2))
    git("add", "big.bin", cwd=origin)
    git("commit", "-q", "-m", "too big", cwd=origin)
    too_big = git("push", url, "main", cwd=origin, check=False)
    assert too_big.returncode != 0 and "maximum allowed size" in too_big.stderr
    assert git.remote_refs(url, tmp_path)["refs/heads/main"] == rewritten


def test_concurrent_pushes_to_one_ref_give_exactly_one_ok(
    node: RunningNode, tmp_path: Path
) -> None:
    git = Git(git_env(node.home, tmp_path))
    url = "cis://alpha/race"
    base = tmp_path / "base"
    git("init", "-q", "-b", "main", str(base), cwd=tmp_path)
    git.commit(base, "base")
    git("push", "-q", url, "main", cwd=base)
    for round_ in range(3):
        racers = []
        for side in ("a", "b"):
            repo = tmp_path / f"{side}{round_}"
            git("clone", "-q", url, str(repo), cwd=tmp_path)
            git.commit(repo, f"{side}{round_}")
            racers.append(repo)
        pushes = [git.popen("push", "origin", "main", cwd=repo) for repo in racers]
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in pushes]
        winners = [i for i, (code, _) in enumerate(results) if code == 0]
        assert len(winners) == 1, results
        loser = results[1 - winners[0]][1]
        assert "fetch first" in loser or "non-fast-forward" in loser, loser
        head = git.remote_refs(url, tmp_path)["refs/heads/main"]
        winner_head = git("rev-parse", "HEAD", cwd=racers[winners[0]]).stdout.strip()
        assert head == winner_head


def _pkt(text: bytes) -> bytes:
    return f"{len(text) + 4:04x}".encode() + text


def _read_pkts(stream: Any) -> list[bytes]:
    """pkt-lines up to the next flush-pkt."""
    lines = []
    while (size := int(stream.read(4), 16)) != 0:
        lines.append(stream.read(size - 4))
    return lines


def test_a_push_that_lost_the_race_is_told_fetch_first(node: RunningNode, tmp_path: Path) -> None:
    """A client that was shown the ref before another push moved it: the home node's
    compare-and-swap refuses it with git's standard reason (dulwich alone would answer ok)."""
    git = Git(git_env(node.home, tmp_path))
    url = "cis://alpha/lost-race"
    first, second = tmp_path / "first", tmp_path / "second"
    git("init", "-q", "-b", "main", str(first), cwd=tmp_path)
    old = git.commit(first, "base")
    git("push", "-q", url, "main", cwd=first)
    git("clone", "-q", url, str(second), cwd=tmp_path)
    mine = git.commit(first, "mine")
    helper = subprocess.Popen(
        [str(BIN / "git-remote-cis"), "origin", url], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git.env,
    )  # fmt: skip
    try:
        assert helper.stdin is not None and helper.stdout is not None
        helper.stdin.write(b"connect git-receive-pack\n")
        helper.stdin.flush()
        assert helper.stdout.readline() == b"\n"
        advertised = _read_pkts(helper.stdout)
        assert advertised[0].startswith(f"{old} refs/heads/main\0".encode())
        # Meanwhile another push moves main.
        theirs = git.commit(second, "theirs")
        git("push", "-q", "origin", "main", cwd=second)
        pack = subprocess.run(
            ["git", "pack-objects", "--stdout", "--revs", "-q"], input=f"{mine}\n^{old}\n".encode(),
            cwd=first, env=git.env, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        command = f"{old} {mine} refs/heads/main\0report-status\n".encode()
        helper.stdin.write(_pkt(command) + b"0000" + pack)
        helper.stdin.close()
        report = _read_pkts(helper.stdout)
        assert report == [b"unpack ok\n", b"ng refs/heads/main fetch first\n"]
        assert helper.wait(timeout=60) == 0
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
        for pipe in (helper.stdin, helper.stdout, helper.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
    assert git.remote_refs(url, tmp_path)["refs/heads/main"] == theirs


def test_an_object_corrupted_in_the_store_is_refused(node: RunningNode, tmp_path: Path) -> None:
    git = Git(git_env(node.home, tmp_path))
    url = "cis://alpha/corrupt"
    origin = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    git.commit(origin, "one", "first content\n")
    git.commit(origin, "two", "second content\n")
    git("push", "-q", url, "main", cwd=origin)
    victim = git("rev-parse", "HEAD:two", cwd=origin).stdout.strip()
    objects = node.home / "skills" / "git" / "repos" / "corrupt.git" / "objects"
    explode_and_corrupt(objects, victim, b"blob 16\0second contenT\n")  # one byte off
    cloned = git("clone", url, str(tmp_path / "clone"), cwd=tmp_path, check=False)
    # The node streams the stored bytes; git's index-pack computes every object id and finds
    # the one it was promised missing.
    assert cloned.returncode != 0, cloned.stderr
    assert f"did not receive expected object {victim}" in cloned.stderr
    assert not (tmp_path / "clone").exists()
    status = git("ls-remote", url, cwd=tmp_path)  # the skill still serves
    assert "refs/heads/main" in status.stdout


def test_clear_errors(node: RunningNode, tmp_path: Path) -> None:
    git = Git(git_env(node.home, tmp_path))
    sha256 = tmp_path / "sha256"
    git("init", "-q", "--object-format=sha256", "-b", "main", str(sha256), cwd=tmp_path)
    git.commit(sha256, "a")
    refused = git("push", "cis://alpha/modern", "main", cwd=sha256, check=False)
    assert refused.returncode != 0
    assert "fatal: cis: SHA-256 repositories are not supported" in refused.stderr

    missing = git(
        "clone", "cis://alpha/nothing-here", str(tmp_path / "x"), cwd=tmp_path, check=False
    )
    assert missing.returncode != 0 and "no repository nothing-here on alpha" in missing.stderr
    elsewhere = git("clone", "cis://beta/repo", str(tmp_path / "y"), cwd=tmp_path, check=False)
    assert elsewhere.returncode != 0 and "home node beta unreachable" in elsewhere.stderr
    bad = git("clone", "cis://alpha/Bad..Name", str(tmp_path / "z"), cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "invalid repository name" in bad.stderr

    nowhere = Git({**git.env, "CIS_HOME": str(tmp_path / "no-node")})
    down = nowhere("ls-remote", "cis://alpha/anything", cwd=tmp_path, check=False)
    assert down.returncode != 0
    assert f"fatal: cis: no node running for CIS_HOME={tmp_path / 'no-node'}" in down.stderr


def test_without_the_git_binary_the_node_serves_with_dulwich_alone(
    processes: Processes, node_home: Path, tmp_path: Path
) -> None:
    """The node's own pack indexing and generation fall back to dulwich's when ``git`` is not
    on its PATH (the client side still is git)."""
    env = {**os.environ, "PATH": str(tmp_path / "no-git-here")}
    node = start_node(processes, node_home, env)
    git = Git(git_env(node_home, tmp_path))
    url = "cis://alpha/pure"
    origin = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    for number in range(3):
        git.commit(origin, f"file{number}")
    git("tag", "-a", "v1", "-m", "v1", cwd=origin)
    git("push", "-q", url, "main", "v1", cwd=origin)
    clone = tmp_path / "clone"
    git("clone", "-q", url, str(clone), cwd=tmp_path)
    git("fsck", "--strict", cwd=clone)
    assert git.refs(clone)["refs/tags/v1"] == git.refs(origin)["refs/tags/v1"]
    git.commit(clone, "more")
    git("push", "-q", "origin", "main", cwd=clone)
    git("pull", "-q", "--ff-only", url, "main", cwd=origin)
    assert git.refs(origin)["refs/heads/main"] == git.refs(clone)["refs/heads/main"]
    # dulwich checks every object it reads: a damaged store is refused by the node itself.
    victim = git("rev-parse", "HEAD:file1", cwd=origin).stdout.strip()
    objects = node_home / "skills" / "git" / "repos" / "pure.git" / "objects"
    explode_and_corrupt(objects, victim, b"blob 6\0fileX\n")
    damaged = git("clone", url, str(tmp_path / "again"), cwd=tmp_path, check=False)
    assert damaged.returncode != 0
    assert "repository pure is damaged on alpha (ChecksumMismatch)" in damaged.stderr
    assert "refs/heads/main" in git("ls-remote", url, cwd=tmp_path).stdout  # still serving
    node.send_signal(signal.SIGTERM)
    assert node.wait(timeout=15) == 0


def _room_events(home: Path, room_id: str, event_type: str) -> list[dict[str, Any]]:
    folder = hashlib.sha256(room_id.encode()).hexdigest()[:32]
    path = home / "rooms" / folder / "events.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT pdu FROM events WHERE type = ? ORDER BY stream_ordering", (event_type,)
        ).fetchall()
    return [json.loads(row[0]) for row in rows]


def test_each_accepted_push_is_an_event_of_the_repository_room(
    node: RunningNode, tmp_path: Path
) -> None:
    git = Git(git_env(node.home, tmp_path))
    url = "cis://alpha/evented"
    origin = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    first = git.commit(origin, "one")
    git("branch", "dev", cwd=origin)
    git("push", "-q", url, "main", "dev", cwd=origin)
    second = git.commit(origin, "two")
    git("push", "-q", url, "main", cwd=origin)
    home = ["--home", str(node.home)]
    room = "!git.evented:alpha.cis.local"

    def listed() -> dict[str, Any]:
        repos = json.loads(cis_node("git", "list", "--json", *home).stdout)["repositories"]
        return next(r for r in repos if r["repo"] == "evented")

    room_file = node.home / "rooms" / hashlib.sha256(room.encode()).hexdigest()[:32] / "events.db"
    deadline = time.monotonic() + 60
    while not room_file.exists() or len(_room_events(node.home, room, "io.cis.git.push")) < 3:
        assert time.monotonic() < deadline, "the push events did not arrive"
        time.sleep(0.05)
    pushes = [e["content"] for e in _room_events(node.home, room, "io.cis.git.push")]
    zero = "0" * 40
    assert [(p["ref"], p["old"], p["new"]) for p in pushes] == [
        ("refs/heads/dev", zero, first), ("refs/heads/main", zero, first),
        ("refs/heads/main", first, second),
    ] or [(p["ref"], p["old"], p["new"]) for p in pushes] == [
        ("refs/heads/main", zero, first), ("refs/heads/dev", zero, first),
        ("refs/heads/main", first, second),
    ]  # fmt: skip
    assert all(p["repo"] == "evented" and p["pusher"] == "@cis:alpha.cis.local" for p in pushes)
    assert len(pushes[2]["objects"]) == 3  # commit, tree, blob: references, never blobs' bytes
    [levels] = _room_events(node.home, room, "m.room.power_levels")
    assert levels["content"]["events"]["io.cis.git.push"] == 50
    assert levels["content"]["users"] == {"@cis:alpha.cis.local": 100}
    [rules] = _room_events(node.home, room, "m.room.join_rules")
    assert rules["content"] == {"join_rule": "invite"}
    assert [e["content"] for e in _room_events(node.home, room, "io.cis.room.federation")] == [
        {"federate": True}
    ]
    assert listed()["room_id"] == room and listed()["private"] is False

    made_private = cis_node("git", "private", "evented", *home)
    assert made_private.stdout == f"evented: {room} is private\n", made_private.stderr
    assert listed()["private"] is True
    assert cis_node("git", "private", "evented", "--off", *home).returncode == 0
    federation = _room_events(node.home, room, "io.cis.room.federation")
    assert [e["content"]["federate"] for e in federation] == [True, False, True]
