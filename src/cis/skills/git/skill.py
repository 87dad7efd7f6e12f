"""The Git skill: ``git push/fetch/clone cis://NODE/REPO`` with the stock ``git`` binary.

- ``git-remote-cis`` (``helper``) pipes git's protocol v0 to the stream ``git`` of this skill on
  the local node (``/_cis/admin/v1/skills/git/streams/git``), with the parameters
  ``{"service", "node", "repo"}``.
- Repositories homed on this node are served here (``serve``); their refs change only through
  ``Repositories.update_refs`` (compare-and-swap under a per-repository lock).
- Each accepted ref update is a row of ``pushes`` committed with the ref; a task of the skill
  sends the rows still without an event as ``io.cis.git.push`` to the repository room
  ``!git.REPO:{node_id}.cis.local`` (created on the first push: federated, join rule invite),
  each with the ``txn_id`` ``git.push.{row id}``, so a crash between the two sends it once.
- ``cis://HOME/REPO`` with another node as HOME goes through this node's replica
  (``repos/REPO@HOME.git``): a fetch or clone first brings the replica up to date from the home
  node (``peer``), then is served from it (from the replica alone, with a warning, when the home
  node cannot be reached); a push is received here and carried to the home node, whose
  compare-and-swap decides (``cis: home node HOME unreachable`` when it cannot be reached).
  Before each, this node asks the home node to admit it (peer method ``admit``: power 0 at
  trust level 1, 50 at level 2) and joins the repository room once; on each push event of a
  repository room it holds, a replica fetches what it lacks.

Configuration (``[skills.git]``): ``max_input_size`` (bytes, git's ``receive.maxInputSize``;
0 means no limit), ``max_sessions`` (git operations served at once, default 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from cis.ids import RoomId
from cis.matrix import Event
from cis.skills.admission import admit_node, join_peer_room, power_for_trust
from cis.skills.contract import (
    POWER_ADMIN,
    CommandError,
    DuplexStream,
    RoomSpec,
    SkillApi,
    SkillDisabled,
    SkillError,
    SkillUnavailable,
)
from cis.skills.git import schema
from cis.skills.git.names import (
    NODE_RE,
    InvalidName,
    parse_cis_url,
    repo_room_localpart,
    validate_repo,
)
from cis.skills.git.peer import GitExchange
from cis.skills.git.repos import Repositories
from cis.skills.pipe import PipeClosed

if TYPE_CHECKING:
    from cis.skills.git.serve import ApplyUpdates

# dulwich (and ``serve``, built on it) is imported where git is served, not at node start: a
# node that serves no git operation does not carry it in memory.

__all__ = ["PUSH_EVENT", "GitSkill"]

PUSH_EVENT: Final = "io.cis.git.push"
FEDERATION_STATE: Final = "io.cis.room.federation"
SERVICES: Final = frozenset({"git-upload-pack", "git-receive-pack"})
EXIT_FATAL: Final = 128
DEFAULT_SESSIONS: Final = 16
PACED_EVENTS_PER_S: Final = 20.0
"""The outbox stays well below the host's flood limit even for a push of many refs."""
OUTBOX_RETRY_S: Final = 30.0


def _damage_errors() -> tuple[type[Exception], ...]:
    """What dulwich raises for a damaged object store."""
    from dulwich.errors import ApplyDeltaError, ChecksumMismatch, ObjectFormatException

    return (ChecksumMismatch, ObjectFormatException, ApplyDeltaError, zlib.error, KeyError)


class GitSkill:
    name = "git"
    rooms: ClassVar[tuple[RoomSpec, ...]] = ()
    event_types: ClassVar[dict[str, int]] = {PUSH_EVENT: POWER_ADMIN}
    migrations = schema.MIGRATIONS

    async def init(self, api: SkillApi) -> None:
        self.api = api
        self.repos = Repositories(api.data_dir / "repos", api.database, api.node_id, api.clock)
        config = api.config
        self.max_input_size = _positive_int(config.get("max_input_size", 0), "max_input_size")
        sessions = _positive_int(config.get("max_sessions", DEFAULT_SESSIONS), "max_sessions")
        self._sessions = asyncio.Semaphore(sessions or DEFAULT_SESSIONS)
        self._wake = asyncio.Event()
        self._wake.set()  # drain what a previous run left in the outbox
        self._outbox_task = asyncio.get_running_loop().create_task(self._drain_outbox())
        self.exchange = GitExchange(api, self.repos, self.max_input_size, self._wake.set)
        self.exchange.register()
        api.register_stream("git", self._serve)
        api.register_command("list", self._list)
        api.register_command("private", self._private)
        api.register_command("admit", self._admit)
        api.register_peer_method("admit", self._serve_admit)

    async def on_event(self, event: Event) -> None:
        """A push event. The home node sent it itself; a replica (this node joined the room of
        another node's repository) fetches what it lacks and takes the home node's refs, in
        one transaction with the event's delivery position."""
        if event.type != PUSH_EVENT or event.sender == self.api.sovereign_user:
            return
        home = event.room_id.rpartition(":")[2].removesuffix(".cis.local")
        repo = event.content.get("repo")
        if home == self.api.node_id or not isinstance(repo, str):
            return
        try:
            await self.exchange.replicate(home, validate_repo(repo))
        except (SkillUnavailable, CommandError, InvalidName) as exc:
            # The next push event, clone or fetch through this node tries again.
            self.api.log.warning("git_replica_behind", repo=repo, home=home, why=str(exc))

    # ------------------------------------------------------------ serving git

    async def _serve(self, stream: DuplexStream, params: Mapping[str, str]) -> int:
        from dulwich.errors import GitProtocolError, HangupException

        service = params.get("service", "")
        try:
            if service not in SERVICES:
                raise InvalidName(f"unknown git service {service!r}")
            url = parse_cis_url(f"cis://{params.get('node', '')}/{params.get('repo', '')}")
        except InvalidName as exc:
            return _fatal(stream, str(exc))
        async with self._sessions:
            try:
                if url.node != self.api.node_id:
                    return await self._serve_remote(url.node, url.repo, service, stream)
                if service == "git-upload-pack":
                    return await asyncio.to_thread(self._upload, url.repo, stream)
                status = await asyncio.to_thread(self._receive, url.repo, stream)
                self._wake.set()
                return status
            except (HangupException, PipeClosed):
                return EXIT_FATAL
            except GitProtocolError as exc:
                return _fatal(stream, f"cis: {exc}")
            except _damage_errors() as exc:
                # dulwich checks every object it reads against its id: a damaged store is
                # refused here, for this repository only (the skill goes on serving others).
                self.api.log.error(
                    "git_repository_damaged", repo=url.repo, error=type(exc).__name__,
                    message=str(exc)[:200],
                )  # fmt: skip
                return _fatal(
                    stream, f"cis: repository {url.repo} is damaged on {self.api.node_id} "
                    f"({type(exc).__name__}); it was not served"
                )  # fmt: skip

    async def _serve_remote(self, home: str, repo: str, service: str, stream: DuplexStream) -> int:
        """``cis://HOME/REPO`` through this node: fetch and clone from this node's replica
        (brought up to date first when the home node answers), pushes carried to the home node,
        which alone moves the refs."""
        key = self.repos.key(home, repo)
        try:
            await self._become_member(home, repo)
            await self.exchange.replicate(home, repo)
        except SkillUnavailable:
            if service == "git-receive-pack":
                return _fatal(stream, f"cis: home node {home} unreachable")
            if await asyncio.to_thread(self.repos.info, key) is None:
                return _fatal(
                    stream, f"cis: no replica of cis://{home}/{repo} here and home node "
                    f"{home} unreachable"
                )  # fmt: skip
            _message(stream, f"cis: home node {home} unreachable; serving this node's replica")
        except CommandError as exc:
            return _fatal(stream, f"cis: {exc}")
        if service == "git-upload-pack":
            return await asyncio.to_thread(self._upload, key, stream)
        loop = asyncio.get_running_loop()

        def forward(
            store: Any, requests: list[Any], _listed: list[str], _count: int
        ) -> list[str | None]:
            future = asyncio.run_coroutine_threadsafe(
                self._forward(home, repo, store, requests), loop
            )
            return future.result()

        return await asyncio.to_thread(self._receive, key, stream, forward)

    async def _become_member(self, home: str, repo: str) -> None:
        """Ask the home node to admit this node to the repository room (the power follows its
        trust in this node), then join it once, so that its push events reach this node's
        replica. A refusal leaves the replica to be brought up to date by each operation."""
        room_id = self.api.room_id(repo_room_localpart(repo), home)
        await join_peer_room(self.api, home, room_id, {"repo": repo})

    async def _forward(
        self, home: str, repo: str, store: Any, requests: list[Any]
    ) -> list[str | None]:
        try:
            statuses = await self.exchange.forward_push(home, repo, store, requests)
        except SkillUnavailable:
            return [f"home node {home} unreachable"] * len(requests)
        except CommandError as exc:
            return [str(exc)[:200]] * len(requests)
        with contextlib.suppress(SkillUnavailable, CommandError):
            await self.exchange.replicate(home, repo)
        return statuses

    def _upload(self, key: str, stream: DuplexStream) -> int:
        from cis.skills.git.serve import serve_upload_pack

        info = self.repos.info(key)
        if info is None or not self.repos.exists(key):
            repo = key.partition("@")[0]
            return _fatal(stream, f"cis: no repository {repo} on {self.api.node_id}")
        store = self.repos.object_store(key)
        try:
            serve_upload_pack(store, self.repos.path(key), self.repos.refs(key), info.head, stream)
        finally:
            store.close()
        return 0

    def _receive(self, key: str, stream: DuplexStream, apply: ApplyUpdates | None = None) -> int:
        from cis.skills.git.serve import serve_receive_pack

        store = self.repos.object_store(key, create=True)
        pusher = self.api.sovereign_user

        def apply_here(
            store_: Any, requests: list[Any], listed: list[str], count: int
        ) -> list[str | None]:
            return self.repos.update_refs(
                key, store_, requests, pusher=pusher, objects=listed, objects_count=count
            )

        try:
            result = serve_receive_pack(
                store,
                self.repos.path(key),
                self.repos.refs(key),
                stream,
                apply or apply_here,
                max_input_size=self.max_input_size or None,
            )
        finally:
            store.close()
        self.api.log.info(
            "git_push_served", repo=key, updates=result.updates, accepted=result.accepted,
            objects=result.objects, unpack_error=result.unpack_error,
        )  # fmt: skip
        return 0

    # ------------------------------------------------------------ push events

    async def _drain_outbox(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_pending()
            except SkillDisabled:
                raise
            except SkillUnavailable as exc:
                self.api.log.warning("git_push_events_waiting", why=str(exc))
                self._retry_later()
            except Exception as exc:  # a refused event, a room in the way: try again later
                self.api.log.error(
                    "git_push_events_failed", error=type(exc).__name__, message=str(exc)[:200]
                )
                self._retry_later()

    def _retry_later(self) -> None:
        asyncio.get_running_loop().call_later(OUTBOX_RETRY_S, self._wake.set)

    async def _send_pending(self) -> None:
        db = self.api.database
        while rows := await db.run_read("git_outbox", schema.outbox):
            for row in rows:
                room_id = await self._repo_room(row.repo)
                content: dict[str, Any] = {
                    "repo": row.repo, "ref": row.ref, "old": row.old, "new": row.new,
                    "pusher": row.pusher,
                }  # fmt: skip
                if row.objects or row.objects_count == 0:
                    content["objects"] = list(row.objects)
                else:
                    content["objects_count"] = row.objects_count
                event_id = await self.api.send_event(
                    room_id, PUSH_EVENT, content, txn_id=f"git.push.{row.id}"
                )
                await db.run_interaction(
                    "git_mark_pushed", schema.mark_pushed_txn, row.id, event_id, room_id, row.repo
                )
                if len(rows) > 1:
                    await asyncio.sleep(1 / PACED_EVENTS_PER_S)

    async def _repo_room(self, repo: str) -> RoomId:
        info = await self.api.database.run_read("git_repo", schema.read_repo, repo)
        private = info.private if info is not None else False
        return await self.api.create_room(
            RoomSpec(repo_room_localpart(repo), federate=not private, name=f"git: {repo}")
        )

    # ------------------------------------------------------------ commands

    async def _list(self, _args: Mapping[str, Any]) -> Mapping[str, Any]:
        repos = await self.api.database.run_read("git_list", _list_txn)
        return {"repositories": repos}

    async def _admit(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``admit {repo, node, may_push}`` (a local tool): admit node ``node``'s sovereign
        user to the repository room with power 0 (it may read, i.e. replicate) or, with
        ``may_push``, the power of ``io.cis.git.push`` (50), and invite it."""
        node = args.get("node")
        if not isinstance(node, str) or not NODE_RE.match(node) or node == self.api.node_id:
            raise CommandError("node must be another node's id")
        power = POWER_ADMIN if args.get("may_push") else 0
        return await self._admit_node(args.get("repo"), node, power)

    async def _serve_admit(
        self, caller: str, header: Mapping[str, Any], _payload: bytes
    ) -> tuple[Mapping[str, Any], bytes]:
        """``admit {repo}`` from another node (a clone or push through it): its power in the
        repository room follows this node's trust in it, 0 at level 1, 50 (may push) at 2."""
        power = power_for_trust(self.api.peer_trust(caller))
        answer = await self._admit_node(header.get("repo"), caller, power, lower=False)
        return answer, b""

    async def _admit_node(
        self, repo_arg: object, node: str, power: int, *, lower: bool = True
    ) -> dict[str, Any]:
        try:
            repo = validate_repo(str(repo_arg or ""))
        except InvalidName as exc:
            raise CommandError(str(exc)) from None
        info = await self.api.database.run_read("git_repo", schema.read_repo, repo)
        if info is None or info.home_node != self.api.node_id or info.private:
            raise CommandError(f"no repository {repo} homed on {self.api.node_id}")
        try:
            room_id = await self._repo_room(repo)
        except SkillDisabled:
            raise
        except SkillError as exc:
            raise CommandError(str(exc)) from None
        return {"repo": repo, **await admit_node(self.api, room_id, node, power, lower=lower)}

    async def _private(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``cis-node git private REPO [--off]``: stop (or resume) federating the room."""
        try:
            repo = validate_repo(str(args.get("repo", "")))
        except InvalidName as exc:
            raise CommandError(str(exc)) from None
        private = bool(args.get("private", True))
        info = await self.api.database.run_read("git_repo", schema.read_repo, repo)
        if info is None or info.home_node != self.api.node_id:
            raise CommandError(f"no repository {repo} homed on {self.api.node_id}")
        try:
            room_id = await self._repo_room(repo)
            await self.api.send_state(room_id, FEDERATION_STATE, "", {"federate": not private})
        except SkillDisabled:
            raise
        except SkillError as exc:
            raise CommandError(str(exc)) from None
        await self.api.database.run_interaction("git_set_private", _set_private_txn, repo, private)
        return {"repo": repo, "room_id": room_id, "private": private}


def _message(stream: DuplexStream, message: str) -> None:
    with contextlib.suppress(PipeClosed):
        stream.message(message)


def _fatal(stream: DuplexStream, message: str) -> int:
    with contextlib.suppress(PipeClosed):
        stream.message(message if message.startswith("fatal:") else f"fatal: {message}")
    return EXIT_FATAL


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SkillError(f"[skills.git] {what} must be a non-negative integer")
    return value


def _list_txn(conn: Any) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT r.name, r.home_node, r.room_id, r.head, r.private,
                  (SELECT count(*) FROM refs WHERE repo = r.name),
                  (SELECT count(*) FROM pushes WHERE repo = r.name)
           FROM repositories AS r ORDER BY r.name"""
    ).fetchall()
    return [
        {
            "repo": name,
            "home_node": home,
            "room_id": room,
            "head": head,
            "private": bool(private),
            "refs": refs,
            "pushes": pushes,
        }
        for name, home, room, head, private, refs, pushes in rows
    ]


def _set_private_txn(conn: Any, repo: str, private: bool) -> None:
    conn.execute("UPDATE repositories SET private = ? WHERE name = ?", (int(private), repo))
