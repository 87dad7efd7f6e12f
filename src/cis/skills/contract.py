"""The skill contract: what a skill is (``Skill``) and everything it may do (``SkillApi``).

Third-party skills are written against this module alone (re-exported by ``cis.skills``); it
is versioned with ``CONTRACT_VERSION`` and documented in docs/skills.md.

A skill is a class, found through the entry-point group ``cis.skills`` and instantiated with
no arguments, that names itself, the rooms it owns, the event types it handles (with the power
level each needs), its database migrations, and two coroutines::

    class Notes:
        name = "notes"
        rooms = (RoomSpec("notes"),)                  # !notes:{node_id}.cis.local
        event_types = {"io.cis.notes.add": POWER_MEMBER}
        migrations = (Migration(1, "notes", ("CREATE TABLE notes (body TEXT)",)),)

        async def init(self, api: SkillApi) -> None:
            self.api = api

        async def on_event(self, event: Event) -> None:
            body = str(event.content.get("body", ""))
            await self.api.database.run_interaction("add_note", add_note_txn, body)

Rules the host enforces (docs/skills.md says why):

1. A skill never sees the node: only its ``SkillApi``. Its code runs in its own worker thread
   with its own event loop, never on the node's loop.
2. Handlers see each event of the skill's rooms (of the types it handles) once, in stream order
   per room. The room's position advances in the same transaction as the handler's writes to
   the skill's database: within one handler, the first ``database.run_interaction`` carries the
   position, and a second one is refused (``SkillError``). A handler that writes nothing has its
   position committed after it returns. Events a skill sends from a handler should carry a
   ``txn_id`` derived from the event handled, so a retried handler sends nothing twice.
3. A skill that raises, overruns its deadline (blocking with ``time.sleep`` or awaiting too
   long) or floods the node with events is logged, counted and disabled. Its thread cannot be
   killed: a disabled skill's thread is abandoned.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Final, Literal, ParamSpec, Protocol, TypeAlias, TypeVar

from cis.clock import Clock
from cis.errors import CisError
from cis.ids import EventId, NodeId, RoomId, ServerName, UserId
from cis.log import Logger
from cis.matrix import Event
from cis.storage.sqlite import Migration

__all__ = [
    "CONTRACT_VERSION",
    "MAX_PEER_PAYLOAD",
    "POWER_ADMIN",
    "POWER_MEMBER",
    "POWER_SOVEREIGN",
    "CommandError",
    "CommandHandler",
    "DuplexStream",
    "EventHandler",
    "Migration",
    "PeerHandler",
    "PeerReply",
    "RoomSpec",
    "Skill",
    "SkillApi",
    "SkillDatabase",
    "SkillDisabled",
    "SkillError",
    "SkillUnavailable",
    "StreamHandler",
    "validate_event_type",
    "validate_localpart",
    "validate_skill_name",
]

P = ParamSpec("P")
T = TypeVar("T")

CONTRACT_VERSION: Final = 1

POWER_MEMBER: Final = 0
POWER_ADMIN: Final = 50
POWER_SOVEREIGN: Final = 100
"""Power levels map to CIS rights: 0 member, 50 admin, 100 the node's sovereign user."""

SKILL_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
LOCALPART_RE: Final = re.compile(r"[a-z0-9][a-z0-9._=-]{0,127}\Z")
MAX_PEER_PAYLOAD: Final = 768 * 1024
"""Bytes of payload one peer call carries each way (a tunnel frame holds at most 1 MiB)."""
EVENT_TYPE_RE: Final = re.compile(r"io\.cis\.([a-z][a-z0-9_]{0,31})\.[a-z0-9_.]{1,64}\Z")


class SkillError(CisError):
    """A skill used its API wrongly (the message says how); also the root of the errors below."""


class SkillDisabled(SkillError):
    """The skill was disabled (it raised, overran a deadline or flooded); nothing more runs."""


class SkillUnavailable(SkillError):
    """What the skill asked for needs a part of the node that is not running."""


class CommandError(CisError):
    """A command's expected refusal (bad input, unknown key): shown to the caller, not counted
    against the skill."""


def validate_skill_name(name: object) -> str:
    if not isinstance(name, str) or not SKILL_NAME_RE.match(name):
        raise SkillError(f"invalid skill name {name!r} (expected [a-z][a-z0-9_]{{0,31}})")
    return name


def validate_localpart(localpart: object) -> str:
    if not isinstance(localpart, str) or not LOCALPART_RE.match(localpart):
        raise SkillError(f"invalid room localpart {localpart!r}")
    return localpart


def validate_event_type(skill: str, event_type: object) -> str:
    """A skill's own event types are ``io.cis.{skill}.{action}``."""
    match = EVENT_TYPE_RE.match(event_type) if isinstance(event_type, str) else None
    if match is None or match.group(1) != skill:
        raise SkillError(f"event type {event_type!r} is not of the form io.cis.{skill}.ACTION")
    return str(event_type)


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """A room a skill owns: ``!{localpart}:{node_id}.cis.local``, created by the node's
    sovereign user (power 100) when missing.

    ``federate`` sets ``io.cis.room.federation``; a ``sandbox`` room is a temporary room that
    never federates and is archived by ``SkillApi.archive_sandbox_room``. ``power_levels`` maps
    users to levels beyond the sovereign user's 100 (e.g. a peer node's user at 0 or 50).
    """

    localpart: str
    federate: bool = False
    join_rule: Literal["invite", "public"] = "invite"
    name: str | None = None
    sandbox: bool = False
    power_levels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_localpart(self.localpart)
        if self.sandbox and self.federate:
            raise SkillError("a sandbox room never federates")


EventHandler: TypeAlias = Callable[[Event], Awaitable[None]]
CommandHandler: TypeAlias = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
"""A command from a local tool (``cis-node memory set …``): JSON object in, JSON object out."""


class DuplexStream(Protocol):
    """A byte stream between a local tool and a skill (``git-remote-cis`` ↔ the Git skill).

    Its methods block and are safe from any thread (a skill runs blocking protocol code, such
    as dulwich's, in a thread of its own).
    """

    def recv(self, size: int) -> bytes:
        """Between 1 and ``size`` bytes of the tool's input (waiting for some); ``b""`` once
        the tool's input ended."""
        ...

    def write(self, data: bytes) -> None:
        """Send ``data`` to the tool's stdout (waits while the tool is slow to read)."""
        ...

    def message(self, text: str) -> None:
        """A line for the tool's stderr (progress, warnings)."""
        ...


StreamHandler: TypeAlias = Callable[[DuplexStream, Mapping[str, str]], Awaitable[int]]
"""Serves one stream; returns the tool's exit status (0 success)."""

PeerReply: TypeAlias = tuple[Mapping[str, Any], bytes]
PeerHandler: TypeAlias = Callable[[str, Mapping[str, Any], bytes], Awaitable[PeerReply]]
"""``(caller node_id, header, payload) -> (header, payload)``: the same skill on another node
asked for something (a ``CommandError`` is returned to the caller as its refusal)."""


class SkillDatabase(Protocol):
    """The skill's own SQLite file ``skills/{skill}.db`` (one writer thread, group commit)."""

    @property
    def path(self) -> Path: ...

    async def run_interaction(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, *args)`` in a write transaction; return after COMMIT. Inside an event
        handler, the room's delivery position commits in the same transaction."""
        ...

    def run_interaction_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``run_interaction`` for a thread of the skill's own (never on an event loop)."""
        ...

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(conn, *args)`` on a read-only connection, in one read transaction."""
        ...

    def read_blocking(
        self,
        name: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    async def query(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        attach: Mapping[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        """One read-only statement over this file with others ATTACHed read-only.

        ``attach`` maps a schema alias to ``skill:NAME`` (another skill's database) or
        ``room:ROOM_ID`` (the ``events.db`` of a room this skill owns or watches), e.g.
        ``{"repo": "room:!git.voxel-engine:alpha.cis.local"}``.
        """
        ...


class SkillApi(Protocol):
    """Everything a skill may do. It never sees the node object."""

    @property
    def skill(self) -> str:
        """The skill's name."""
        ...

    @property
    def node_id(self) -> NodeId: ...

    @property
    def server_name(self) -> ServerName: ...

    @property
    def sovereign_user(self) -> UserId:
        """``@cis:{server_name}``: the node's system user, power 100 in skill rooms."""
        ...

    @property
    def config(self) -> Mapping[str, Any]:
        """The ``[skills.{name}]`` table of the node's configuration (empty when absent)."""
        ...

    @property
    def data_dir(self) -> Path:
        """``skills/{name}/`` (0700), for the skill's own files."""
        ...

    @property
    def database(self) -> SkillDatabase: ...

    @property
    def log(self) -> Logger: ...

    @property
    def clock(self) -> Clock:
        """The node's clock (time is an input: tests advance a fake one)."""
        ...

    def room_id(self, localpart: str, node_id: str | None = None) -> RoomId:
        """``!{localpart}:{node_id}.cis.local`` (this node by default)."""
        ...

    # ------------------------------------------------------------ rooms

    async def create_room(self, spec: RoomSpec) -> RoomId:
        """Create the room as the sovereign user (create, join, power levels with the skill's
        event types, join rule, ``io.cis.room.federation``), in one room transaction; the
        skill's handlers then see its events. An existing room of this skill is returned."""
        ...

    async def archive_sandbox_room(self, room_id: RoomId) -> None: ...

    async def watch_room(self, room_id: RoomId) -> None:
        """Deliver the events of another room this node holds (e.g. one joined) to the
        skill's handlers from its beginning."""
        ...

    async def send_event(
        self,
        room_id: RoomId,
        event_type: str,
        content: Mapping[str, Any],
        *,
        txn_id: str | None = None,
    ) -> EventId:
        """Send as the sovereign user, through the node's event creation (the room's auth
        rules apply). The same ``txn_id`` sends once."""
        ...

    async def send_state(
        self, room_id: RoomId, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> EventId: ...

    async def get_state(
        self, room_id: RoomId, event_type: str, state_key: str = ""
    ) -> Event | None:
        """The current state event, if any."""
        ...

    async def state_of_type(self, room_id: RoomId, event_type: str) -> dict[str, Event]:
        """Every current state event of ``event_type``, by state key."""
        ...

    async def room_events(
        self,
        room_id: RoomId,
        *,
        types: Sequence[str] | None = None,
        after: EventId | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Timeline events of the room in stream order, after ``after`` (at most 1,000)."""
        ...

    # ------------------------------------------------------------ handlers

    def register_handler(self, event_type: str, handler: EventHandler) -> None:
        """Handle ``event_type`` (of the skill's rooms) with ``handler`` instead of
        ``on_event``. Register during ``init``."""
        ...

    def register_command(self, name: str, handler: CommandHandler) -> None:
        """Serve ``POST /_cis/admin/v1/skills/{skill}/commands/{name}`` (local tools)."""
        ...

    def register_stream(self, name: str, handler: StreamHandler) -> None:
        """Serve the local byte-stream endpoint ``/_cis/admin/v1/skills/{skill}/streams/{name}``."""
        ...

    # ------------------------------------------------------------ other nodes

    def register_peer_method(self, name: str, handler: PeerHandler) -> None:
        """Answer ``name`` when the same skill on another node calls it (over the tunnel)."""
        ...

    async def call_peer(
        self,
        node_id: str,
        method: str,
        header: Mapping[str, Any],
        payload: bytes = b"",
    ) -> tuple[dict[str, Any], bytes]:
        """Call ``method`` of the same skill on node ``node_id``: a JSON header and at most
        ``MAX_PEER_PAYLOAD`` bytes each way (a skill chunks larger data). ``SkillUnavailable``
        when that node cannot be reached; ``CommandError`` with the peer's refusal."""
        ...

    def peer_trust(self, node_id: str) -> int:
        """The trust level this node gives node ``node_id`` (federation's: 0 nothing crosses,
        1 read, 2 read and write; 0 when this node does not federate)."""
        ...

    async def invite(self, room_id: RoomId, user_id: str) -> None:
        """Invite ``user_id`` (e.g. another node's sovereign user) to one of the skill's rooms,
        as the sovereign user; another node's user is invited through that node, which
        countersigns. Already invited or joined: nothing happens."""
        ...

    async def join_room(self, room_id: RoomId, via: Sequence[str] = ()) -> None:
        """Join a room of another node owned by this skill there (the sovereign user, through
        the nodes ``via`` then the room's own), then deliver its events like a watched room.
        ``SkillUnavailable`` when it cannot be joined now."""
        ...


class Skill(Protocol):
    """A plugin. Instantiated once per node start with no arguments."""

    name: str
    rooms: Sequence[RoomSpec]
    event_types: Mapping[str, int]
    """Each event type the skill handles or sends, with the power level sending it needs."""
    migrations: Sequence[Migration]

    async def init(self, api: SkillApi) -> None: ...

    async def on_event(self, event: Event) -> None: ...
