"""A skill's own database: effectively-once writes in handlers and read-only ATTACH queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cis.ids import EventId, RoomId
from cis.node import NodeStorage
from cis.skills.api import CURRENT_DELIVERY, Delivery
from cis.skills.contract import SkillError
from cis.skills.gateway import CreatorGateway
from cis.storage.errors import InvalidQuery
from cis.storage.skills import attached_query, delivery_positions
from tests.skills.conftest import MakeHost
from tests.skills.helpers import eventually, plain_room, send_items

ITEM = "io.cis.recorder.item"


def _insert(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("INSERT INTO items (room_id, event_id, n) VALUES ('!r:x', '$e', ?)", (n,))


async def test_a_handler_write_carries_its_position_and_a_second_is_refused(
    make_host: MakeHost,
) -> None:
    host = await make_host(("recorder",))
    runtime = host.runtime("recorder")
    assert runtime is not None and runtime.api is not None
    db = runtime.api.database
    delivery = Delivery(RoomId("!r:alpha.cis.local"), 41, EventId("$forty-one"))
    token = CURRENT_DELIVERY.set(delivery)
    try:
        await db.run_interaction("insert", _insert, 1)
        with pytest.raises(SkillError, match="one transaction"):
            await db.run_interaction("insert", _insert, 2)
    finally:
        CURRENT_DELIVERY.reset(token)
    positions = await db.run_read("positions", delivery_positions)
    assert positions == {"!r:alpha.cis.local": 41}
    assert await db.run_read("n", lambda c: c.execute("SELECT n FROM items").fetchall()) == [(1,)]
    await db.run_interaction("insert", _insert, 3)  # outside a handler: a plain write
    assert (await db.run_read("positions", delivery_positions))["!r:alpha.cis.local"] == 41


async def test_attach_joins_a_skill_table_with_the_room_events(
    make_host: MakeHost, storage: NodeStorage, gateway: CreatorGateway
) -> None:
    identity = storage.identity
    room = await plain_room(gateway, identity, "joined")
    await send_items(gateway, identity, room, range(1, 6), ITEM)
    host = await make_host(("recorder",), per_skill={"recorder": {"watch": [room]}})
    runtime = host.runtime("recorder")
    assert runtime is not None and runtime.api is not None
    db = runtime.api.database
    count = "SELECT count(*) FROM items"
    await eventually(lambda: attached_query(db.path, count, (), {})[0][0] == 5, what="5 items")
    rows = await db.query(
        """SELECT i.n, e.type, e.sender FROM items AS i
           JOIN room.events AS e ON e.event_id = i.event_id
           WHERE e.type = ? ORDER BY e.stream_ordering""",
        (ITEM,),
        attach={"room": f"room:{room}"},
    )
    assert rows == [(n, ITEM, identity.system_user_id) for n in range(1, 6)]
    refused = [
        "DELETE FROM items",
        "INSERT INTO room.events DEFAULT VALUES",
        "ATTACH DATABASE 'x.db' AS x",
        "PRAGMA room.journal_mode = DELETE",
    ]
    for sql in refused:
        with pytest.raises(InvalidQuery):
            await db.query(sql, attach={"room": f"room:{room}"})
    with pytest.raises(SkillError, match="neither owns nor watches"):
        await db.query("SELECT 1", attach={"other": "room:!elsewhere:alpha.cis.local"})
    assert await db.query("SELECT count(*) FROM items") == [(5,)]


def test_attached_query_bounds(tmp_path: Path) -> None:
    main = tmp_path / "main.db"
    with sqlite3.connect(main) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20)])
    assert len(attached_query(main, "SELECT x FROM t", (), {})) == 20
    with pytest.raises(InvalidQuery, match="more than 10 rows"):
        attached_query(main, "SELECT x FROM t", (), {}, max_rows=10)
    with pytest.raises(InvalidQuery, match="schema alias"):
        attached_query(main, "SELECT 1", (), {"main": main})
    with pytest.raises(InvalidQuery, match="does not exist"):
        attached_query(main, "SELECT 1", (), {"gone": tmp_path / "gone.db"})
