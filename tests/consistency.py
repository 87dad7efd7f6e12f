"""Checks that a home's derived indexes agree with its room files (used by unit and e2e tests).

Opens every file read-only with plain ``sqlite3``, so it can run after a node was killed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class HomeCheck:
    events_by_room: dict[str, set[str]] = field(default_factory=dict)
    integrity: dict[str, str] = field(default_factory=dict)

    @property
    def all_events(self) -> set[str]:
        return set().union(*self.events_by_room.values()) if self.events_by_room else set()


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _integrity(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def check_home(root: Path) -> HomeCheck:
    """Assert every database is intact and ``node.db``'s indexes match the room files."""
    result = HomeCheck()
    node = _ro(root / "node.db")
    try:
        result.integrity["node.db"] = _integrity(node)
        registry = dict(
            node.execute("SELECT dir_name, room_id FROM rooms WHERE status = 'active'").fetchall()
        )
        archived = dict(
            node.execute("SELECT dir_name, room_id FROM rooms WHERE status = 'archived'").fetchall()
        )
        stream_max = node.execute("SELECT stream_max FROM node_status").fetchone()[0]
        indexed: dict[str, set[tuple[int, str, str]]] = {}
        for pos, room_id, event_id, status in node.execute(
            "SELECT stream_ordering, room_id, event_id, status FROM stream"
        ):
            indexed.setdefault(room_id, set()).add((pos, event_id, status))
        memberships: dict[str, set[tuple[str, str, str]]] = {}
        for room_id, user_id, membership, event_id in node.execute(
            "SELECT room_id, user_id, membership, event_id FROM memberships"
        ):
            memberships.setdefault(room_id, set()).add((user_id, membership, event_id))
        upto = dict(node.execute("SELECT room_id, indexed_upto FROM rooms").fetchall())
    finally:
        node.close()
    rooms_dir = root / "rooms"
    folders = sorted(
        p for p in (rooms_dir.iterdir() if rooms_dir.exists() else ()) if (p / "events.db").exists()
    )
    assert {p.name for p in folders} == set(registry), "registry and room folders differ"
    archive_dir = rooms_dir / "archived"
    archived_folders = sorted(
        p
        for p in (archive_dir.iterdir() if archive_dir.exists() else ())
        if (p / "events.db").exists()
    )
    assert {p.name for p in archived_folders} == set(archived), "archived rooms differ"
    names = {**registry, **archived}
    for folder in folders + archived_folders:
        room_id = names[folder.name]
        assert json.loads((folder / "meta.json").read_text())["room_id"] == room_id
        conn = _ro(folder / "events.db")
        try:
            result.integrity[folder.name] = _integrity(conn)
            rows = set(conn.execute("SELECT stream_ordering, event_id, status FROM events"))
            members = {
                (key, json.loads(pdu)["content"].get("membership"), eid)
                for key, eid, pdu in conn.execute(
                    "SELECT s.state_key, s.event_id, e.pdu FROM room_state AS s"
                    " JOIN events AS e ON e.event_id = s.event_id WHERE s.type = 'm.room.member'"
                )
            }
            (room_room_id,) = conn.execute("SELECT room_id FROM room").fetchone()
        finally:
            conn.close()
        assert room_room_id == room_id
        assert indexed.get(room_id, set()) == rows, f"stream index differs for {room_id}"
        assert memberships.get(room_id, set()) == members, f"memberships differ for {room_id}"
        top = max((r[0] for r in rows), default=0)
        assert upto[room_id] == top, f"indexed_upto of {room_id} is {upto[room_id]}, not {top}"
        assert stream_max >= top
        if folder.name in registry:
            result.events_by_room[room_id] = {r[1] for r in rows}
    assert set(indexed) <= set(names.values()), "index rows of unknown rooms"
    bad = {name: verdict for name, verdict in result.integrity.items() if verdict != "ok"}
    assert not bad, f"integrity_check failed: {bad}"
    return result
