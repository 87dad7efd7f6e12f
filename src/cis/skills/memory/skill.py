"""The memory skill: a node's memories, private or public (seed 000 §2.1 "公域记忆").

- **Private** memories live only in ``skills/memory.db`` (scope ``private``): no event, no
  room, nothing that federation could carry, so they never leave the node.
- **Public** memories are state events ``io.cis.memory.entry`` (state key = the key, content
  ``{"value": …}``; a deletion is empty content) in the federated room
  ``!memory:{node_id}.cis.local`` (or the memory room of another node this node has joined).
  Concurrent sets on two nodes are resolved by Matrix state resolution, never by timestamps:
  whenever an entry event is handled, the skill copies that room's *current* state of the type
  into its table (one transaction, with the delivery position), so every node shows the value
  state resolution chose.
- ``search`` is full-text (FTS5, trigram) over keys and values of both kinds, the whole phrase
  first.

- Another node follows this node's public memories by joining its memory room (``join``, or
  any ``--node`` command): it asks this node to admit it (peer method ``admit``; power 0 at
  trust level 1, read only, 50 at level 2, may set), then joins through federation.

Commands (``cis-node memory …``): ``set``, ``get``, ``list``, ``delete``, ``search``, ``join``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from cis.identity.names import NODE_NAME_RE
from cis.ids import RoomId
from cis.matrix import Event
from cis.skills.admission import admit_node, join_peer_room, power_for_trust
from cis.skills.contract import (
    POWER_ADMIN,
    CommandError,
    RoomSpec,
    SkillApi,
    SkillDisabled,
    SkillError,
    SkillUnavailable,
)
from cis.skills.memory import store
from cis.skills.memory.store import MAX_KEY_CHARS, MAX_VALUE_BYTES, PRIVATE

__all__ = ["ENTRY_EVENT", "MemorySkill"]

ENTRY_EVENT: Final = "io.cis.memory.entry"
ROOM_LOCALPART: Final = "memory"
DEFAULT_RESULTS: Final = 20


def validate_key(key: object) -> str:
    if (
        not isinstance(key, str)
        or not 0 < len(key) <= MAX_KEY_CHARS
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)
    ):
        raise CommandError(f"a key is 1-{MAX_KEY_CHARS} characters without control characters")
    return key


def validate_value(value: object) -> str:
    if not isinstance(value, str):
        raise CommandError("a value is a string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise CommandError(f"a value is at most {MAX_VALUE_BYTES} bytes (it must fit an event)")
    if "\x00" in value:
        raise CommandError("a value cannot hold NUL")
    return value


def _public(args: Mapping[str, Any]) -> bool:
    """A command names a public memory with ``public`` or with another node's ``node``."""
    return bool(args.get("public")) or args.get("node") not in (None, "")


class MemorySkill:
    name = "memory"
    rooms: ClassVar[tuple[RoomSpec, ...]] = ()
    event_types: ClassVar[dict[str, int]] = {ENTRY_EVENT: POWER_ADMIN}
    migrations = store.MIGRATIONS

    async def init(self, api: SkillApi) -> None:
        self.api = api
        for name, handler in (
            ("set", self._set), ("get", self._get), ("list", self._list),
            ("delete", self._delete), ("search", self._search),
        ):  # fmt: skip
            api.register_command(name, handler)
        api.register_command("join", self._join)
        api.register_peer_method("admit", self._serve_admit)

    # ------------------------------------------------------------ events

    async def on_event(self, event: Event) -> None:
        """An entry changed in a memory room: copy that room's current entries."""
        if event.type == ENTRY_EVENT:
            await self._refresh(event.room_id)

    async def _refresh(self, room_id: RoomId) -> int:
        state = await self.api.state_of_type(room_id, ENTRY_EVENT)
        entries = {
            key: (value, event.event_id)
            for key, event in state.items()
            if isinstance(value := event.content.get("value"), str)
        }
        return await self.api.database.run_interaction(
            "memory_refresh", store.replace_scope_txn, room_id, entries, self.api.clock.time_ms()
        )

    async def _settle(self) -> None:
        """Copy the current entries of every public scope again before a read. A room's
        current state can change without a new event: when an event of another node arrives,
        the node resolves the state of the room's forward extremities just after storing it,
        and the handler of that event may have read the state in between."""
        scopes = await self.api.database.run_read("memory_scopes", _public_scopes)
        for scope in scopes:
            try:
                await self._refresh(RoomId(scope))
            except SkillDisabled:
                raise
            except SkillError as exc:
                self.api.log.warning("memory_scope_unreadable", room_id=scope, why=str(exc))

    async def _room(self, node: object) -> RoomId:
        """This node's memory room, or node ``node``'s, joined first if need be (that node
        admits this one with the power its trust gives: 0 read, 50 write)."""
        if node in (None, "", self.api.node_id):
            return await self._own_room()
        if not isinstance(node, str) or not NODE_NAME_RE.fullmatch(node):
            raise CommandError("node must be a node id")
        room_id = self.api.room_id(ROOM_LOCALPART, node)
        try:
            await self.api.watch_room(room_id)
            return room_id  # held here: joined before
        except SkillDisabled:
            raise
        except SkillError:
            pass  # not held here yet
        try:
            joined = await join_peer_room(self.api, node, room_id, {})
        except SkillUnavailable as exc:
            raise CommandError(f"node {node} unreachable: {exc}") from None
        if not joined:
            raise CommandError(f"node {node} did not admit this node to its memory room")
        return room_id

    async def _own_room(self) -> RoomId:
        return await self.api.create_room(
            RoomSpec(ROOM_LOCALPART, federate=True, name="public memories")
        )

    async def _serve_admit(
        self, caller: str, _header: Mapping[str, Any], _payload: bytes
    ) -> tuple[Mapping[str, Any], bytes]:
        """Another node asks to follow this node's public memories (``memory join``)."""
        power = power_for_trust(self.api.peer_trust(caller))
        try:
            room_id = await self._own_room()
        except SkillDisabled:
            raise
        except SkillError as exc:
            raise CommandError(str(exc)) from None
        return await admit_node(self.api, room_id, caller, power, lower=False), b""

    # ------------------------------------------------------------ commands

    async def _set(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        key = validate_key(args.get("key"))
        value = validate_value(args.get("value"))
        db = self.api.database
        now = self.api.clock.time_ms()
        if not _public(args):
            await db.run_interaction(
                "memory_set", store.set_txn, PRIVATE, key, value, now_ms=now, event_id=None
            )
            return {"key": key, "scope": PRIVATE}
        room_id = await self._room(args.get("node"))
        event_id = await self.api.send_state(room_id, ENTRY_EVENT, key, {"value": value})
        await db.run_interaction("memory_unset_private", store.delete_txn, PRIVATE, key)
        await self._refresh(room_id)  # read your own write at once
        return {"key": key, "scope": room_id, "event_id": event_id}

    async def _get(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        key = validate_key(args.get("key"))
        db = self.api.database
        if not args.get("public") and args.get("node") is None:
            memory = await db.run_read("memory_get", store.get, PRIVATE, key)
            if memory is not None:
                return memory.to_json()
        node = args.get("node")
        if node in (None, "", self.api.node_id):
            room_id = self.api.room_id(ROOM_LOCALPART)
        else:
            room_id = await self._room(node)
        await self._settle()
        memory = await db.run_read("memory_get", store.get, room_id, key)
        if memory is None:
            raise CommandError(f"no memory {key!r}")
        return memory.to_json()

    async def _list(self, _args: Mapping[str, Any]) -> Mapping[str, Any]:
        await self._settle()
        memories = await self.api.database.run_read("memory_list", store.list_all)
        return {"memories": [m.to_json() for m in memories]}

    async def _delete(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        key = validate_key(args.get("key"))
        if not _public(args):
            deleted = await self.api.database.run_interaction(
                "memory_delete", store.delete_txn, PRIVATE, key
            )
            if not deleted:
                raise CommandError(f"no private memory {key!r}")
            return {"key": key, "scope": PRIVATE}
        room_id = await self._room(args.get("node"))
        if await self.api.get_state(room_id, ENTRY_EVENT, key) is None:
            raise CommandError(f"no public memory {key!r}")
        event_id = await self.api.send_state(room_id, ENTRY_EVENT, key, {})
        await self._refresh(room_id)
        return {"key": key, "scope": room_id, "event_id": event_id}

    async def _join(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``join {node}``: follow node ``node``'s public memories (they appear in ``list``,
        ``get --node`` and ``search``)."""
        room_id = await self._room(args.get("node"))
        count = await self._refresh(room_id)
        return {"room_id": room_id, "memories": count}

    async def _search(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        text = args.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > 1000:
            raise CommandError("search text is 1-1000 characters")
        limit = args.get("limit", DEFAULT_RESULTS)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 1000:
            raise CommandError("limit is 1-1000")
        await self._settle()
        found = await self.api.database.run_read("memory_search", store.search, text, limit)
        return {"memories": [m.to_json() for m in found]}


def _public_scopes(conn: Any) -> list[str]:
    rows = conn.execute("SELECT DISTINCT scope FROM memories WHERE scope != ?", (PRIVATE,))
    return [scope for (scope,) in rows]
