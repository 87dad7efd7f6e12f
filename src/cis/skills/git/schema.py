"""The Git skill's database (``skills/git.db``): repositories, their refs, their pushes.

Refs live here, not in files, so that a ref update (compare-and-swap on the old value) and the
push record that announces it (the outbox row of its ``io.cis.git.push`` event) commit in one
transaction: a crash can neither move a ref silently nor announce a move that did not happen.

- ``repositories``: one row per repository this node holds, homed here or replicated.
- ``refs``: ``(repo, name) → sha``; ``HEAD`` is not a row but ``repositories.head``.
- ``pushes``: every accepted ref update, oldest first; ``event_id`` is set once its
  ``io.cis.git.push`` event is in the repository room (rows without one are the outbox).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cis.skills.contract import Migration

__all__ = [
    "MIGRATIONS",
    "PushRow",
    "RefUpdate",
    "RepoRow",
    "apply_updates_txn",
    "mark_pushed_txn",
    "outbox",
    "read_refs",
    "read_repo",
    "replace_refs_txn",
]

MAX_LISTED_OBJECTS: Final = 1000
ZERO: Final = "0" * 40

MIGRATIONS: Final = (
    Migration(
        1,
        "repositories, refs, pushes",
        (
            """CREATE TABLE repositories (
                name TEXT PRIMARY KEY,
                home_node TEXT NOT NULL,
                room_id TEXT,
                head TEXT,
                private INTEGER NOT NULL DEFAULT 0,
                created_ts INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE refs (
                repo TEXT NOT NULL REFERENCES repositories (name),
                name TEXT NOT NULL,
                sha TEXT NOT NULL,
                PRIMARY KEY (repo, name)
            ) WITHOUT ROWID""",
            """CREATE TABLE pushes (
                id INTEGER PRIMARY KEY,
                repo TEXT NOT NULL REFERENCES repositories (name),
                ref TEXT NOT NULL,
                old TEXT NOT NULL,
                new TEXT NOT NULL,
                pusher TEXT NOT NULL,
                objects TEXT NOT NULL,
                objects_count INTEGER NOT NULL,
                pushed_ts INTEGER NOT NULL,
                event_id TEXT
            )""",
            "CREATE INDEX pushes_outbox ON pushes (id) WHERE event_id IS NULL",
            "CREATE INDEX pushes_repo ON pushes (repo, id)",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class RepoRow:
    name: str
    home_node: str
    room_id: str | None
    head: str | None
    private: bool
    created_ts: int


@dataclass(frozen=True, slots=True)
class RefUpdate:
    ref: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class PushRow:
    id: int
    repo: str
    ref: str
    old: str
    new: str
    pusher: str
    objects: tuple[str, ...]
    objects_count: int


def read_repo(conn: sqlite3.Connection, repo: str) -> RepoRow | None:
    row = conn.execute(
        "SELECT name, home_node, room_id, head, private, created_ts FROM repositories"
        " WHERE name = ?",
        (repo,),
    ).fetchone()
    if row is None:
        return None
    return RepoRow(row[0], row[1], row[2], row[3], bool(row[4]), int(row[5]))


def read_refs(conn: sqlite3.Connection, repo: str) -> dict[str, str]:
    rows = conn.execute("SELECT name, sha FROM refs WHERE repo = ?", (repo,)).fetchall()
    return {str(name): str(sha) for name, sha in rows}


class RefMoved(Exception):
    """A ref was not at the value the update expected (the per-repository lock makes this a
    bug, not a race: the whole transaction is rolled back)."""


def apply_updates_txn(
    conn: sqlite3.Connection,
    repo: str,
    updates: Sequence[RefUpdate],
    *,
    home_node: str,
    pusher: str,
    objects: Sequence[str],
    objects_count: int,
    now_ms: int,
) -> list[int]:
    """Apply checked ref updates as compare-and-swap and record each as a push; return the
    push ids. Creates the repository row on its first update and points ``HEAD`` at
    ``refs/heads/main`` if pushed, else at the first branch pushed."""
    conn.execute(
        "INSERT INTO repositories (name, home_node, created_ts) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (repo, home_node, now_ms),
    )
    listed = json.dumps(list(objects) if len(objects) <= MAX_LISTED_OBJECTS else [])
    ids: list[int] = []
    for update in updates:
        if update.old == ZERO:
            cursor = conn.execute(
                "INSERT INTO refs (repo, name, sha) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (repo, update.ref, update.new),
            )
        elif update.new == ZERO:
            cursor = conn.execute(
                "DELETE FROM refs WHERE repo = ? AND name = ? AND sha = ?",
                (repo, update.ref, update.old),
            )
        else:
            cursor = conn.execute(
                "UPDATE refs SET sha = ? WHERE repo = ? AND name = ? AND sha = ?",
                (update.new, repo, update.ref, update.old),
            )
        if cursor.rowcount != 1:
            raise RefMoved(update.ref)
        cursor = conn.execute(
            """INSERT INTO pushes (repo, ref, old, new, pusher, objects, objects_count, pushed_ts)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (repo, update.ref, update.old, update.new, pusher, listed, objects_count, now_ms),
        )
        ids.append(int(cursor.lastrowid or 0))
    head = conn.execute("SELECT head FROM repositories WHERE name = ?", (repo,)).fetchone()[0]
    if head is None:
        branches = [u.ref for u in updates if u.ref.startswith("refs/heads/") and u.new != ZERO]
        if branches:
            chosen = "refs/heads/main" if "refs/heads/main" in branches else branches[0]
            conn.execute("UPDATE repositories SET head = ? WHERE name = ?", (chosen, repo))
    return ids


def replace_refs_txn(
    conn: sqlite3.Connection,
    repo: str,
    refs: Mapping[str, str],
    *,
    home_node: str,
    head: str | None,
    now_ms: int,
) -> int:
    """A replica takes its home node's refs as they are (the home node is their one authority);
    return how many refs changed."""
    conn.execute(
        """INSERT INTO repositories (name, home_node, head, created_ts) VALUES (?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET head = excluded.head
           WHERE repositories.home_node = excluded.home_node""",
        (repo, home_node, head, now_ms),
    )
    held = read_refs(conn, repo)
    changes = 0
    for name in held.keys() - refs.keys():
        conn.execute("DELETE FROM refs WHERE repo = ? AND name = ?", (repo, name))
        changes += 1
    for name, sha in refs.items():
        if held.get(name) != sha:
            conn.execute(
                "INSERT INTO refs (repo, name, sha) VALUES (?, ?, ?)"
                " ON CONFLICT (repo, name) DO UPDATE SET sha = excluded.sha",
                (repo, name, sha),
            )
            changes += 1
    return changes


def outbox(conn: sqlite3.Connection, limit: int = 100) -> list[PushRow]:
    rows = conn.execute(
        """SELECT id, repo, ref, old, new, pusher, objects, objects_count FROM pushes
           WHERE event_id IS NULL ORDER BY id LIMIT ?""",
        (limit,),
    ).fetchall()
    return [
        PushRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6])), int(r[7]))
        for r in rows
    ]


def mark_pushed_txn(
    conn: sqlite3.Connection, push_id: int, event_id: str, room_id: str, repo: str
) -> None:
    conn.execute("UPDATE pushes SET event_id = ? WHERE id = ?", (event_id, push_id))
    conn.execute(
        "UPDATE repositories SET room_id = ? WHERE name = ? AND room_id IS NULL", (room_id, repo)
    )
