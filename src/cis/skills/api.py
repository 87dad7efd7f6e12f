"""The node's implementation of ``SkillApi`` and ``SkillDatabase`` for one hosted skill.

Skill code calls these from its own worker loop. Anything that touches the node's components
hops to the node's loop (``_on_node``); the skill's database is thread-safe on its own (a writer
thread and reader connections) and is used directly. Every call first checks that the skill is
still enabled, so an abandoned thread of a disabled skill reaches nothing.

Effectively-once delivery lives in ``HostedSkillDatabase.run_interaction``: inside a handler
(``CURRENT_DELIVERY`` is set by the host for the handler's task) the first write transaction
also advances the room's delivery position, so both commit or neither does.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

from cis.clock import Clock
from cis.ids import EventId, NodeId, RoomId, ServerName, UserId
from cis.log import Logger, get_logger
from cis.matrix import Event
from cis.skills.contract import (
    CommandHandler,
    EventHandler,
    PeerHandler,
    RoomSpec,
    SkillDisabled,
    SkillError,
    StreamHandler,
    validate_localpart,
)
from cis.storage.database import Database
from cis.storage.skills import advance_position_txn, attached_query

if TYPE_CHECKING:
    from cis.skills.host import SkillHost, _Runtime

__all__ = ["CURRENT_DELIVERY", "Delivery", "HostedSkillDatabase", "NodeSkillApi"]

P = ParamSpec("P")
T = TypeVar("T")

MAX_EVENT_TYPE_BYTES: Final = 255
MAX_NAME_CHARS: Final = 64


@dataclass(slots=True)
class Delivery:
    """The event a handler is handling: where the skill's position goes when it commits."""

    room_id: RoomId
    position: int
    event_id: EventId
    open: bool = True
    committed: bool = False


CURRENT_DELIVERY: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "cis_skill_delivery", default=None
)


class HostedSkillDatabase:
    """``SkillDatabase`` over the skill's ``Database``."""

    def __init__(self, host: SkillHost, runtime: _Runtime, db: Database) -> None:
        self._host = host
        self._rt = runtime
        self._db = db

    @property
    def path(self) -> Path:
        return self._db.path

    def _check(self) -> None:
        if self._rt.disabled:
            raise SkillDisabled(f"skill {self._rt.name} is disabled")

    async def run_interaction(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()
        delivery = CURRENT_DELIVERY.get()
        if delivery is None or not delivery.open:
            return await self._db.run_interaction(name, fn, *args, **kwargs)
        if delivery.committed:
            raise SkillError(
                f"skill {self._rt.name}: a handler commits its writes in one transaction "
                "(the one that carries its delivery position)"
            )
        delivery.committed = True

        def with_position(conn: sqlite3.Connection) -> T:
            result = fn(conn, *args, **kwargs)
            advance_position_txn(conn, delivery.room_id, delivery.position, delivery.event_id)
            return result

        try:
            return await self._db.run_interaction(name, with_position)
        except BaseException:
            delivery.committed = False
            raise

    def run_interaction_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()
        return self._db.run_interaction_blocking(name, fn, *args, **kwargs)

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()
        return await self._db.run_read(name, fn, *args, **kwargs)

    def read_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()
        return self._db.read_blocking(name, fn, *args, **kwargs)

    async def query(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        attach: Mapping[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        self._check()
        files = await self._host.attach_sources(self._rt, attach or {})
        return await asyncio.to_thread(attached_query, self._db.path, sql, params, files)


class NodeSkillApi:
    """``SkillApi`` for one skill (see ``cis.skills.contract.SkillApi`` for the contract)."""

    def __init__(self, host: SkillHost, runtime: _Runtime, database: HostedSkillDatabase) -> None:
        self._host = host
        self._rt = runtime
        self._database = database
        self._log = get_logger(f"cis.skills.{runtime.name}")

    # ------------------------------------------------------------ who and where

    @property
    def skill(self) -> str:
        return self._rt.name

    @property
    def node_id(self) -> NodeId:
        return self._host.identity.node_id

    @property
    def server_name(self) -> ServerName:
        return self._host.identity.server_name

    @property
    def sovereign_user(self) -> UserId:
        return self._host.identity.system_user_id

    @property
    def config(self) -> Mapping[str, Any]:
        return self._rt.config

    @property
    def data_dir(self) -> Path:
        return self._rt.data_dir

    @property
    def database(self) -> HostedSkillDatabase:
        return self._database

    @property
    def log(self) -> Logger:
        return self._log

    @property
    def clock(self) -> Clock:
        return self._host.clock

    def room_id(self, localpart: str, node_id: str | None = None) -> RoomId:
        validate_localpart(localpart)
        server = f"{node_id}.cis.local" if node_id is not None else self.server_name
        return RoomId(f"!{localpart}:{server}")

    # ------------------------------------------------------------ calls into the node

    def _check(self) -> None:
        if self._rt.disabled:
            raise SkillDisabled(f"skill {self._rt.name} is disabled")

    async def _on_node(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the node's loop and wait for it from the skill's loop."""
        self._check()
        node_loop = self._host.loop
        if asyncio.get_running_loop() is node_loop:
            return await make()

        async def run() -> T:
            return await make()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), node_loop))

    def _produce(self, what: str) -> None:
        """Count one event-producing call; a skill past its bucket is flooding."""
        self._check()
        self._host.count_production(self._rt, what)

    # ------------------------------------------------------------ rooms

    async def create_room(self, spec: RoomSpec) -> RoomId:
        if not isinstance(spec, RoomSpec):
            raise SkillError("create_room takes a RoomSpec")
        self._produce("create_room")
        return await self._on_node(lambda: self._host.create_room(self._rt, spec))

    async def archive_sandbox_room(self, room_id: RoomId) -> None:
        await self._on_node(lambda: self._host.archive_sandbox_room(self._rt, room_id))

    async def watch_room(self, room_id: RoomId) -> None:
        await self._on_node(lambda: self._host.watch_room(self._rt, room_id))

    async def send_event(
        self,
        room_id: RoomId,
        event_type: str,
        content: Mapping[str, Any],
        *,
        txn_id: str | None = None,
    ) -> EventId:
        _check_type(event_type)
        self._produce("send_event")
        return await self._on_node(
            lambda: self._host.send(
                self._rt, room_id, event_type, dict(content), state_key=None, txn_id=txn_id
            )
        )

    async def send_state(
        self, room_id: RoomId, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> EventId:
        _check_type(event_type)
        if not isinstance(state_key, str):
            raise SkillError("state_key must be a string")
        self._produce("send_state")
        return await self._on_node(
            lambda: self._host.send(
                self._rt, room_id, event_type, dict(content), state_key=state_key, txn_id=None
            )
        )

    async def get_state(
        self, room_id: RoomId, event_type: str, state_key: str = ""
    ) -> Event | None:
        return await self._on_node(
            lambda: self._host.get_state(self._rt, room_id, event_type, state_key)
        )

    async def state_of_type(self, room_id: RoomId, event_type: str) -> dict[str, Event]:
        return await self._on_node(lambda: self._host.state_of_type(self._rt, room_id, event_type))

    async def room_events(
        self,
        room_id: RoomId,
        *,
        types: Sequence[str] | None = None,
        after: EventId | None = None,
        limit: int = 100,
    ) -> list[Event]:
        return await self._on_node(
            lambda: self._host.room_events(self._rt, room_id, types, after, limit)
        )

    # ------------------------------------------------------------ handlers

    def register_handler(self, event_type: str, handler: EventHandler) -> None:
        self._check()
        _check_type(event_type)
        if not callable(handler):
            raise SkillError("a handler must be callable")
        self._rt.handlers[event_type] = handler

    def register_command(self, name: str, handler: CommandHandler) -> None:
        self._check()
        _check_name("command", name)
        self._rt.commands[name] = handler

    def register_stream(self, name: str, handler: StreamHandler) -> None:
        self._check()
        _check_name("stream", name)
        self._rt.streams[name] = handler

    def register_peer_method(self, name: str, handler: PeerHandler) -> None:
        self._check()
        _check_name("peer method", name)
        self._rt.peer_methods[name] = handler

    async def call_peer(
        self,
        node_id: str,
        method: str,
        header: Mapping[str, Any],
        payload: bytes = b"",
    ) -> tuple[dict[str, Any], bytes]:
        _check_name("peer method", method)
        return await self._on_node(
            lambda: self._host.call_peer(self._rt, node_id, method, header, bytes(payload))
        )

    def peer_trust(self, node_id: str) -> int:
        self._check()
        return self._host.peer_trust(node_id)

    async def invite(self, room_id: RoomId, user_id: str) -> None:
        await self._on_node(lambda: self._host.invite(self._rt, room_id, user_id))

    async def join_room(self, room_id: RoomId, via: Sequence[str] = ()) -> None:
        nodes = tuple(via)
        await self._on_node(lambda: self._host.join_room(self._rt, room_id, nodes))


def _check_type(event_type: object) -> None:
    if (
        not isinstance(event_type, str)
        or not event_type
        or len(event_type.encode("utf-8")) > MAX_EVENT_TYPE_BYTES
    ):
        raise SkillError("an event type is a non-empty string of at most 255 bytes")


def _check_name(what: str, name: object) -> None:
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= MAX_NAME_CHARS
        or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    ):
        raise SkillError(f"a {what} name is 1-{MAX_NAME_CHARS} ASCII letters, digits, - or _")
