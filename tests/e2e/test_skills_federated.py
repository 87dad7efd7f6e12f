"""The Git and memory skills across two federated ``cis-node run`` processes (alpha, the home
node of the repositories, dials beta; both trust each other at level 2). Git, driven by the
real ``git``: push to alpha, clone on beta, push through beta, fetch on alpha; a race between
pushes from both nodes; refusals carried back; a damaged object refused by beta; alpha down
(last: it kills alpha). Memory: public memories reach beta, concurrent sets converge, private
ones stay on their node."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cis.federation.endpoints import FEDERATION_PATH
from tests.e2e.conftest import Processes, cis_node, wait_for
from tests.e2e.fed import FedNode, init_home, kill9, run_node, wait_mesh
from tests.e2e.git_helpers import Git, explode_and_corrupt, git_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TRUSTING = {"CIS_DEFAULT_TRUST": "2", "CIS_SKILLS": "git,memory"}


@dataclass
class Pair:
    alpha: FedNode
    beta: FedNode
    processes: Processes

    def git(self, node: FedNode, tmp: Path) -> Git:
        return Git(git_env(node.home, tmp))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    processes = Processes(tmp_path_factory.mktemp("git-fed"))
    try:
        beta = run_node(processes, init_home(processes, "beta"), None, env=TRUSTING)
        endpoint = beta.url.replace("http://", "ws://") + FEDERATION_PATH
        alpha = run_node(
            processes, init_home(processes, "alpha"), None, "--peer", endpoint, env=TRUSTING
        )
        wait_mesh([alpha, beta])
        yield Pair(alpha, beta, processes)
    finally:
        processes.cleanup()


def replica_refs(node: FedNode, key: str) -> dict[str, str]:
    """The refs of ``key`` in ``node``'s Git skill database (``REPO@HOME`` for a replica)."""
    db = sqlite3.connect(f"file:{node.home / 'skills' / 'git.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, sha FROM refs WHERE repo = ?", (key,)).fetchall()
    finally:
        db.close()
    return dict(rows)


def seed(git: Git, tmp: Path, url: str, commits: int = 3) -> Path:
    origin = tmp / "origin"
    git("init", "-q", "-b", "main", str(origin), cwd=tmp)
    for number in range(commits):
        git.commit(origin, f"file{number}")
    git("push", "-q", url, "main", cwd=origin)
    return origin


def test_push_clone_push_through_beta_fetch_on_alpha(pair: Pair, tmp_path: Path) -> None:
    url = "cis://alpha/voxel-engine"
    on_alpha, on_beta = pair.git(pair.alpha, tmp_path), pair.git(pair.beta, tmp_path)
    origin = tmp_path / "origin"
    on_alpha("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    for number in range(5):
        on_alpha.commit(origin, f"file{number}")
    on_alpha("branch", "feature", "HEAD~2", cwd=origin)
    on_alpha("checkout", "-q", "-b", "topic", "HEAD~1", cwd=origin)
    on_alpha.commit(origin, "topic-file")
    on_alpha("checkout", "-q", "main", cwd=origin)
    on_alpha("tag", "-a", "v1.0", "-m", "first release", "HEAD~1", cwd=origin)
    on_alpha("push", "-q", url, "--all", cwd=origin)
    on_alpha("push", "-q", url, "--tags", cwd=origin)

    # Cloned on beta: beta asks alpha to admit it, joins the repository room, fetches the
    # objects into its replica and serves the clone from there.
    clone = tmp_path / "clone-b"
    on_beta("clone", "-q", url, str(clone), cwd=tmp_path)
    on_beta("fsck", "--strict", cwd=clone)
    origin_refs = {k: v for k, v in on_alpha.refs(origin).items() if k != "HEAD"}
    assert {k: v for k, v in on_beta.remote_refs(url, tmp_path).items() if k != "HEAD"} == (
        origin_refs
    )
    assert on_beta("cat-file", "-t", "v1.0", cwd=clone).stdout.strip() == "tag"

    # Committed on beta and pushed through beta: carried to alpha, which moves the ref.
    new = on_beta.commit(clone, "from-beta")
    pushed = on_beta("push", "origin", "main", cwd=clone)
    assert "main -> main" in pushed.stderr
    assert on_alpha.remote_refs(url, tmp_path)["refs/heads/main"] == new
    on_alpha("fetch", "-q", url, "main", cwd=origin)
    on_alpha("merge", "-q", "--ff-only", "FETCH_HEAD", cwd=origin)
    on_alpha("fsck", "--strict", cwd=origin)
    on_alpha("fetch", "-q", url, "+refs/*:refs/remotes/cis/*", cwd=origin)
    assert on_alpha.remote_refs(url, tmp_path) == on_beta.remote_refs(url, tmp_path)
    assert on_alpha.refs(origin)["refs/heads/main"] == on_beta.refs(clone)["refs/heads/main"]

    # A push on alpha reaches beta's replica through the push event alone (beta joined the
    # repository room), with no git operation on beta.
    later = on_alpha.commit(origin, "later")
    on_alpha("push", "-q", url, "main", cwd=origin)
    wait_for(
        lambda: replica_refs(pair.beta, "voxel-engine@alpha").get("refs/heads/main") == later,
        30,
        "beta's replica to fetch after alpha's push event",
    )

    # Not a fast-forward through beta: refused by git against what beta showed; forced:
    # accepted by alpha.
    on_beta("pull", "-q", "--ff-only", cwd=clone)
    on_beta("reset", "-q", "--hard", "HEAD~1", cwd=clone)
    rewritten = on_beta.commit(clone, "rewritten")
    refused = on_beta("push", "origin", "main", cwd=clone, check=False)
    assert refused.returncode != 0
    assert "non-fast-forward" in refused.stderr or "fetch first" in refused.stderr
    assert on_alpha.remote_refs(url, tmp_path)["refs/heads/main"] == later
    on_beta("push", "-q", "--force", "origin", "main", cwd=clone)
    assert on_alpha.remote_refs(url, tmp_path)["refs/heads/main"] == rewritten
    on_alpha("fetch", "-q", url, "+refs/heads/*:refs/remotes/cis/*", cwd=origin)
    on_alpha("fsck", "--strict", cwd=origin)
    assert on_alpha.refs(origin)["refs/remotes/cis/main"] == rewritten


def test_concurrent_pushes_from_both_nodes_give_exactly_one_ok(pair: Pair, tmp_path: Path) -> None:
    url = "cis://alpha/race"
    on_alpha, on_beta = pair.git(pair.alpha, tmp_path), pair.git(pair.beta, tmp_path)
    seed(on_alpha, tmp_path, url)
    racers = {"alpha": tmp_path / "racer-alpha", "beta": tmp_path / "racer-beta"}
    for name, path in racers.items():
        git = on_alpha if name == "alpha" else on_beta
        git("clone", "-q", url, str(path), cwd=tmp_path)
        git.commit(path, f"racer-{name}")
    for attempt in range(3):
        pushes = {
            name: (on_alpha if name == "alpha" else on_beta).popen(
                "push", "--porcelain", "origin", "main", cwd=path
            )
            for name, path in racers.items()
        }
        results = {name: p.communicate(timeout=120) for name, p in pushes.items()}
        codes = {name: p.returncode for name, p in pushes.items()}
        winners = [name for name, code in codes.items() if code == 0]
        assert len(winners) == 1, (codes, results)
        loser = next(name for name in racers if name not in winners)
        out, err = results[loser]
        assert "fetch first" in out + err or "non-fast-forward" in out + err, (out, err)
        winner_head = on_alpha("rev-parse", "HEAD", cwd=racers[winners[0]]).stdout.strip()
        assert on_alpha.remote_refs(url, tmp_path)["refs/heads/main"] == winner_head
        # Both start again from the winner's commit for the next round.
        for name, path in racers.items():
            git = on_alpha if name == "alpha" else on_beta
            git("pull", "-q", "--rebase", "origin", "main", cwd=path)
            git.commit(path, f"racer-{name}-{attempt}")


def test_an_object_damaged_on_alpha_is_refused_by_beta(pair: Pair, tmp_path: Path) -> None:
    url = "cis://alpha/damaged"
    on_alpha, on_beta = pair.git(pair.alpha, tmp_path), pair.git(pair.beta, tmp_path)
    origin = tmp_path / "origin"
    on_alpha("init", "-q", "-b", "main", str(origin), cwd=tmp_path)
    on_alpha.commit(origin, "one", "first content\n")
    on_alpha.commit(origin, "two", "second content\n")
    on_alpha("push", "-q", url, "main", cwd=origin)
    victim = on_alpha("rev-parse", "HEAD:two", cwd=origin).stdout.strip()
    objects = pair.alpha.home / "skills" / "git" / "repos" / "damaged.git" / "objects"
    explode_and_corrupt(objects, victim, b"blob 15\0second contenT\n")  # one byte off
    cloned = on_beta("clone", url, str(tmp_path / "clone"), cwd=tmp_path, check=False)
    assert cloned.returncode != 0
    assert "refused the pack from alpha" in cloned.stderr, cloned.stderr
    assert not (tmp_path / "clone").exists()
    assert replica_refs(pair.beta, "damaged@alpha") == {}  # the replica was not moved


def memory(on: FedNode, command: str, **args: object) -> dict[str, object]:
    """A memory command run by node ``on`` (through its admin API)."""
    return dict(on.admin("POST", f"/skills/memory/commands/{command}", args))


def test_public_memories_reach_beta_concurrent_sets_converge_private_stays(
    pair: Pair, tmp_path: Path
) -> None:
    alpha, beta = pair.alpha, pair.beta
    public_marker = "public-marker-5d1c0b7e"
    private_marker = "private-marker-a93f6e21"
    memory(alpha, "set", key="language", value=f"Rust {public_marker}", public=True)
    memory(alpha, "set", key="diary", value=f"dear diary {private_marker}")

    # beta follows alpha's public memories (the CLI, through beta's node).
    joined = cis_node("memory", "join", "alpha", "--home", str(beta.home))
    assert joined.returncode == 0, joined.stderr
    assert "!memory:alpha.cis.local" in joined.stdout
    got = memory(beta, "get", key="language", node="alpha")
    assert got["value"] == f"Rust {public_marker}"
    found = memory(beta, "search", text=public_marker)["memories"]
    assert [m["key"] for m in found] == ["language"]  # type: ignore[index]
    # A later public memory arrives by replication alone.
    memory(alpha, "set", key="editor", value="helix", public=True)
    wait_for(
        lambda: any(
            m["key"] == "editor" and m["value"] == "helix"
            for m in memory(beta, "list")["memories"]  # type: ignore[union-attr]
        ),
        30,
        "alpha's new public memory on beta",
    )

    # The same key set at once on both nodes: state resolution picks one value, the same on
    # both, never a timestamp's choice.
    for round_ in range(3):
        values = {"alpha": f"alpha-{round_}", "beta": f"beta-{round_}"}
        barrier = threading.Barrier(2)

        failures: list[BaseException] = []

        def set_on(
            node: FedNode,
            value: str,
            barrier: threading.Barrier = barrier,
            failures: list[BaseException] = failures,
        ) -> None:
            barrier.wait()
            try:
                memory(node, "set", key="shared", value=value, node="alpha")
            except BaseException as exc:  # reported by the test's thread below
                failures.append(exc)

        threads = [
            threading.Thread(target=set_on, args=(alpha, values["alpha"])),
            threading.Thread(target=set_on, args=(beta, values["beta"])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, failures

        def converged(values: dict[str, str] = values) -> bool:
            seen = {
                memory(node, "get", key="shared", node="alpha")["value"] for node in (alpha, beta)
            }
            return len(seen) == 1 and seen <= set(values.values())

        wait_for(converged, 30, f"one value of 'shared' on both nodes (round {round_})")

    # The private memory is in no file of beta's home; the public one is (so the search
    # could find it).
    public_found = private_found = False
    for path in beta.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            public_found |= public_marker.encode() in data
            private_found |= private_marker.encode() in data
    assert public_found
    assert not private_found


def test_with_alpha_down_beta_serves_clones_and_refuses_pushes(pair: Pair, tmp_path: Path) -> None:
    url = "cis://alpha/down"
    on_alpha, on_beta = pair.git(pair.alpha, tmp_path), pair.git(pair.beta, tmp_path)
    origin = seed(on_alpha, tmp_path, url, commits=4)
    head = on_alpha("rev-parse", "HEAD", cwd=origin).stdout.strip()
    first = tmp_path / "first"
    on_beta("clone", "-q", url, str(first), cwd=tmp_path)  # beta now holds a replica
    kill9(pair.alpha)
    wait_for(lambda: "alpha" not in pair.beta.online_peers(), 30, "beta to see alpha gone")

    started = time.monotonic()
    second = tmp_path / "second"
    served = on_beta("clone", url, str(second), cwd=tmp_path)
    assert "home node alpha unreachable; serving this node's replica" in served.stderr
    on_beta("fsck", "--strict", cwd=second)
    assert on_beta.refs(second)["refs/heads/main"] == head

    on_beta.commit(second, "while-alpha-is-down")
    refused = on_beta("push", "origin", "main", cwd=second, check=False)
    assert refused.returncode != 0
    assert "cis: home node alpha unreachable" in refused.stderr, refused.stderr
    assert time.monotonic() - started < 60  # it fails, it does not hang
    status = json.loads(
        (pair.beta.home / "run" / "node.json").read_text()
    )  # beta still runs and serves
    assert status["url"] == pair.beta.url
