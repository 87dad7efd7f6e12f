"""The Git skill between nodes: replicas, and pushes carried to the home node.

Every call is ``SkillApi.call_peer`` (one tunnel request each way, at most
``MAX_PEER_PAYLOAD`` bytes of payload), so larger packs travel in chunks of one session:

``refs {repo}`` → ``{refs, head, home_node}``
    The refs as the answering node holds them (served by the home node and by replicas).
``fetch {repo, wants, haves}`` → ``{session, size}`` + first chunk; then
``fetch {session, offset}`` → the next chunk
    Only the objects the caller lacks travel: ``wants`` are the ref values it does not hold,
    ``haves`` the ones it does, and the answer is a thin pack of ``wants`` minus ``haves``
    (git's negotiation in one round). The caller indexes it with ``index-pack --strict``, which
    computes every object id, then checks that every wanted object arrived before it moves a
    replica ref: a corrupted or missing object is refused.
``push {step: begin, repo, updates, size}`` → ``{session}``; ``push {step: data, session,
offset}`` + chunk; ``push {step: end, session}`` → ``{statuses}``
    A push made through another node: the home node indexes the pack, then applies each update
    with the same compare-and-swap as a local push (``Repositories.update_refs``), the pusher
    being the caller's sovereign user, who needs the power of ``io.cis.git.push`` (50) in the
    repository room. A refusal comes back in git's words and reaches the pushing git.

Sessions live in ``skills/git/exchange/`` and end with their last chunk, or after
``SESSION_TTL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from cis.skills.contract import MAX_PEER_PAYLOAD, CommandError, SkillApi
from cis.skills.git import schema
from cis.skills.git.names import InvalidName, repo_room_localpart, validate_ref, validate_repo
from cis.skills.git.packs import PackRefused, index_pack, write_pack
from cis.skills.git.repos import Repositories, UpdateRequest
from cis.skills.git.schema import ZERO

if TYPE_CHECKING:
    from dulwich.object_store import DiskObjectStore
    from dulwich.objects import ObjectID

__all__ = ["GitExchange", "RemoteRefs"]

CHUNK: Final = 512 * 1024
SESSION_TTL_S: Final = 600.0
MAX_SESSIONS: Final = 16
MAX_UPDATES: Final = 1000
PUSH_EVENT: Final = "io.cis.git.push"


@dataclass(frozen=True, slots=True)
class RemoteRefs:
    refs: dict[str, str]
    head: str | None


@dataclass(slots=True)
class _Session:
    path: Path
    caller: str
    repo: str
    size: int
    started: float
    updates: tuple[UpdateRequest, ...] = ()
    received: int = 0


def _sha_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 100_000:
        raise CommandError(f"{what} must be a list of object ids")
    try:
        return [schema_sha(v) for v in value]
    except InvalidName as exc:
        raise CommandError(f"{what}: {exc}") from None


def schema_sha(value: object) -> str:
    from cis.skills.git.names import validate_sha

    if not isinstance(value, str):
        raise InvalidName("an object id is a string")
    return validate_sha(value)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CommandError(f"{what} must be a non-negative integer")
    return value


class GitExchange:
    """Both sides of the exchange for one node's Git skill."""

    def __init__(
        self,
        api: SkillApi,
        repos: Repositories,
        max_input_size: int,
        pushed: Callable[[], None],
    ) -> None:
        self.api = api
        self._pushed = pushed
        self.repos = repos
        self.max_input_size = max_input_size
        self.dir = api.data_dir / "exchange"
        self._sessions: dict[str, _Session] = {}

    def register(self) -> None:
        self.api.register_peer_method("refs", self._serve_refs)
        self.api.register_peer_method("fetch", self._serve_fetch)
        self.api.register_peer_method("push", self._serve_push)

    # ------------------------------------------------------------ sessions

    def _new_session(self, caller: str, repo: str, size: int) -> tuple[str, _Session]:
        now = self.api.clock.monotonic()
        for token, old in list(self._sessions.items()):
            if now - old.started > SESSION_TTL_S:
                self._end(token)
        if sum(s.caller == caller for s in self._sessions.values()) >= MAX_SESSIONS:
            raise CommandError("too many exchanges in progress")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        session = _Session(self.dir / f"{token}.pack", caller, repo, size, now)
        self._sessions[token] = session
        return token, session

    def _session(self, caller: str, header: Mapping[str, Any]) -> tuple[str, _Session]:
        token = header.get("session")
        session = self._sessions.get(token) if isinstance(token, str) else None
        if session is None or session.caller != caller:
            raise CommandError("no such exchange session")
        return str(token), session

    def _end(self, token: str) -> None:
        session = self._sessions.pop(token, None)
        if session is not None:
            session.path.unlink(missing_ok=True)

    # ------------------------------------------------------------ serving

    def _readable(self, header: Mapping[str, Any]) -> tuple[str, schema.RepoRow]:
        try:
            repo = validate_repo(str(header.get("repo", "")))
        except InvalidName as exc:
            raise CommandError(str(exc)) from None
        key = self.repos.key(self.api.node_id, repo)
        info = self.repos.info(key)
        if info is None or info.private:
            raise CommandError(f"no repository {repo} here")
        return key, info

    async def _serve_refs(
        self, caller: str, header: Mapping[str, Any], _payload: bytes
    ) -> tuple[Mapping[str, Any], bytes]:
        key, info = await asyncio.to_thread(self._readable, header)
        refs = await asyncio.to_thread(self.repos.refs, key)
        return {"refs": refs, "head": info.head, "home_node": info.home_node}, b""

    async def _serve_fetch(
        self, caller: str, header: Mapping[str, Any], _payload: bytes
    ) -> tuple[Mapping[str, Any], bytes]:
        if "session" in header:
            token, session = self._session(caller, header)
            offset = _int(header.get("offset"), "offset")
        else:
            key, _info = await asyncio.to_thread(self._readable, header)
            wants = _sha_list(header.get("wants"), "wants")
            haves = _sha_list(header.get("haves"), "haves")
            token, session = self._new_session(caller, key, 0)
            try:
                session.size = await asyncio.to_thread(self._make_pack, key, wants, haves, session)
            except BaseException:
                self._end(token)
                raise
            offset = 0
        chunk = await asyncio.to_thread(_read_at, session.path, offset, CHUNK)
        if offset + len(chunk) >= session.size:
            self._end(token)
        return {"session": token, "size": session.size, "offset": offset}, chunk

    def _make_pack(self, key: str, wants: list[str], haves: list[str], session: _Session) -> int:
        store = self.repos.object_store(key)
        try:
            missing = [w for w in wants if _oid(w) not in store]
            if missing:
                raise CommandError(f"this node lacks {len(missing)} wanted objects")
            with session.path.open("wb") as out:
                write_pack(
                    self.repos.path(key), store, [_oid(w) for w in wants],
                    [_oid(h) for h in haves], out.write, thin=True,
                )  # fmt: skip
        finally:
            store.close()
        return session.path.stat().st_size

    async def _serve_push(
        self, caller: str, header: Mapping[str, Any], payload: bytes
    ) -> tuple[Mapping[str, Any], bytes]:
        step = header.get("step")
        if step == "begin":
            return await self._push_begin(caller, header)
        token, session = self._session(caller, header)
        if step == "data":
            if _int(header.get("offset"), "offset") != session.received:
                raise CommandError("push data out of order")
            if session.received + len(payload) > session.size:
                raise CommandError("more push data than announced")
            await asyncio.to_thread(_append, session.path, payload)
            session.received += len(payload)
            return {"received": session.received}, b""
        if step == "end":
            try:
                statuses = await self._push_end(session)
            finally:
                self._end(token)
            self._pushed()  # announce what was accepted (io.cis.git.push)
            return {"statuses": statuses}, b""
        raise CommandError("unknown push step")

    async def _push_begin(
        self, caller: str, header: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        try:
            repo = validate_repo(str(header.get("repo", "")))
            updates = header.get("updates")
            if not isinstance(updates, list) or not 0 < len(updates) <= MAX_UPDATES:
                raise CommandError(f"a push updates 1-{MAX_UPDATES} refs")
            requests = tuple(
                UpdateRequest(
                    validate_ref(str(u["ref"])),
                    schema_sha(u["old"]),
                    schema_sha(u["new"]),
                    force=True,
                )
                for u in updates
            )
        except (InvalidName, KeyError, TypeError) as exc:
            raise CommandError(f"bad push: {exc}") from None
        size = _int(header.get("size"), "size")
        if self.max_input_size and size > self.max_input_size:
            raise CommandError("pack exceeds maximum allowed size (receive.maxInputSize)")
        info = await asyncio.to_thread(self.repos.info, repo)
        if info is None or info.home_node != self.api.node_id:
            raise CommandError(f"no repository {repo} homed on {self.api.node_id}")
        await self._check_may_push(caller, repo)
        token, session = self._new_session(caller, repo, size)
        session.updates = requests
        session.path.touch(mode=0o600)
        return {"session": token}, b""

    async def _check_may_push(self, caller: str, repo: str) -> None:
        """The caller's sovereign user needs the power of io.cis.git.push in the room (the
        home node sets it when it admits the node: 0 read-only, 50 may push)."""
        room_id = self.api.room_id(repo_room_localpart(repo))
        levels = await self.api.get_state(room_id, "m.room.power_levels")
        content = levels.content if levels is not None else {}
        users = content.get("users", {})
        needed = content.get("events", {}).get(PUSH_EVENT, 50)
        level = users.get(f"@cis:{caller}.cis.local", content.get("users_default", 0))
        if not isinstance(level, int) or not isinstance(needed, int) or level < needed:
            raise CommandError(f"node {caller} may not push to {repo}")

    async def _push_end(self, session: _Session) -> list[str | None]:
        if session.received != session.size:
            raise CommandError("push data incomplete")
        pusher = f"@cis:{session.caller}.cis.local"
        return await asyncio.to_thread(self._apply_push, session, pusher)

    def _apply_push(self, session: _Session, pusher: str) -> list[str | None]:
        key = session.repo
        store = self.repos.object_store(key)
        try:
            received: list[ObjectID] = []
            if session.size:
                with session.path.open("rb") as data:
                    received = index_pack(
                        self.repos.path(key), store, data.read,
                        max_input_size=self.max_input_size or None, read_exact=data.read,
                    )  # fmt: skip
        except PackRefused as exc:
            return [f"unpack failed: {exc}"] * len(session.updates)
        finally:
            store.close()
        fresh = self.repos.object_store(key)
        try:
            listed = [sha.decode() for sha in received] if len(received) <= 1000 else []
            return self.repos.update_refs(
                key, fresh, list(session.updates), pusher=pusher, objects=listed,
                objects_count=len(received),
            )  # fmt: skip
        finally:
            fresh.close()

    # ------------------------------------------------------------ the caller's side

    async def remote_refs(self, home: str, repo: str) -> RemoteRefs:
        header, _ = await self.api.call_peer(home, "refs", {"repo": repo})
        refs = header.get("refs")
        head = header.get("head")
        if not isinstance(refs, dict):
            raise CommandError(f"node {home} answered refs without refs")
        try:
            checked = {validate_ref(str(k)): schema_sha(v) for k, v in refs.items()}
        except InvalidName as exc:
            raise CommandError(f"node {home} answered a bad ref: {exc}") from None
        return RemoteRefs(checked, head if isinstance(head, str) and head in checked else None)

    async def replicate(self, home: str, repo: str) -> RemoteRefs:
        """Bring this node's replica of ``cis://home/repo`` up to the home node's refs,
        fetching only the objects it lacks; return those refs. ``SkillUnavailable`` when the
        home node cannot be reached, ``CommandError`` when what it sent is refused."""
        remote = await self.remote_refs(home, repo)
        key = self.repos.key(home, repo)
        store = await asyncio.to_thread(self.repos.object_store, key, create=True)
        try:
            wanted = sorted({sha for sha in remote.refs.values()})
            missing = [w for w in wanted if _oid(w) not in store]
            if missing:
                held = await asyncio.to_thread(self.repos.refs, key)
                haves = sorted({s for s in held.values() if _oid(s) in store})
                await self._fetch(home, repo, key, store, wants=missing, haves=haves)
        finally:
            store.close()
        await self.api.database.run_interaction(
            "git_replica_refs", schema.replace_refs_txn, key, remote.refs,
            home_node=home, head=remote.head, now_ms=self.api.clock.time_ms(),
        )  # fmt: skip
        return remote

    async def _fetch(
        self,
        home: str,
        repo: str,
        key: str,
        store: DiskObjectStore,
        *,
        wants: list[str],
        haves: list[str],
    ) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.dir / f"in-{secrets.token_hex(8)}.pack"
        try:
            header, chunk = await self.api.call_peer(
                home, "fetch", {"repo": repo, "wants": wants, "haves": haves}
            )
            size = _int(header.get("size"), "size")
            token = header.get("session")
            with path.open("wb") as out:
                out.write(chunk)
                received = len(chunk)
                while received < size:
                    header, chunk = await self.api.call_peer(
                        home, "fetch", {"session": token, "offset": received}
                    )
                    if not chunk or _int(header.get("offset"), "offset") != received:
                        raise CommandError(f"node {home} sent its pack out of order")
                    out.write(chunk)
                    received += len(chunk)
            await asyncio.to_thread(self._index_fetched, key, store, path, wants, home)
        finally:
            path.unlink(missing_ok=True)

    def _index_fetched(
        self, key: str, store: DiskObjectStore, path: Path, wants: list[str], home: str
    ) -> None:
        try:
            with path.open("rb") as data:
                index_pack(
                    self.repos.path(key), store, data.read, max_input_size=None,
                    read_exact=data.read,
                )  # fmt: skip
        except PackRefused as exc:
            raise CommandError(f"refused the pack from {home}: {exc}") from None
        fresh = self.repos.object_store(key)
        try:
            absent = [w for w in wants if _oid(w) not in fresh]
        finally:
            fresh.close()
        if absent:
            raise CommandError(
                f"refused the pack from {home}: {len(absent)} wanted objects missing "
                f"(first {absent[0]}); the replica was not moved"
            )

    async def forward_push(
        self, home: str, repo: str, store: DiskObjectStore, requests: list[UpdateRequest]
    ) -> list[str | None]:
        """Carry a push received here to the home node; return its verdict per update."""
        key = self.repos.key(home, repo)
        held = await asyncio.to_thread(self.repos.refs, key)
        wants = sorted({r.new for r in requests if r.new != ZERO})
        haves = sorted(set(held.values()))
        buffer = io.BytesIO()
        if wants:
            await asyncio.to_thread(
                write_pack, self.repos.path(key), store,
                [_oid(w) for w in wants], [_oid(h) for h in haves],
                buffer.write, thin=True,
            )  # fmt: skip
        pack = buffer.getvalue()
        updates = [{"ref": r.ref, "old": r.old, "new": r.new} for r in requests]
        header, _ = await self.api.call_peer(
            home, "push", {"step": "begin", "repo": repo, "updates": updates, "size": len(pack)}
        )
        token = header.get("session")
        for offset in range(0, len(pack), MAX_PEER_PAYLOAD):
            await self.api.call_peer(
                home, "push", {"step": "data", "session": token, "offset": offset},
                pack[offset : offset + MAX_PEER_PAYLOAD],
            )  # fmt: skip
        header, _ = await self.api.call_peer(home, "push", {"step": "end", "session": token})
        statuses = header.get("statuses")
        if not isinstance(statuses, list) or len(statuses) != len(requests):
            raise CommandError(f"node {home} answered the push without statuses")
        return [s if isinstance(s, str) or s is None else "refused" for s in statuses]


def _oid(sha: str) -> ObjectID:
    """A hex object id as dulwich takes it (``ObjectID`` is bytes; dulwich is not imported
    at node start)."""
    return cast("ObjectID", sha.encode())


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with contextlib.closing(os.fdopen(fd, "ab")) as handle:
        handle.write(data)
