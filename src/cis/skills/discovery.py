"""Finding skills: the entry-point group ``cis.skills``.

A distribution offers a skill with an entry point whose name is the skill's name and whose
value names the class, e.g. in its ``pyproject.toml``::

    [project.entry-points."cis.skills"]
    notes = "cis_notes:NotesSkill"

Installed is not enabled: the node runs only the skills its configuration enables
(``[skills] enabled``). Loading imports the class and checks that it fulfils ``Skill``
(its attributes' shapes; ``init`` and ``on_event`` are coroutine functions); a skill that fails
to load is reported with the reason and never stops the node.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from cis.skills.contract import (
    RoomSpec,
    Skill,
    SkillError,
    validate_event_type,
    validate_skill_name,
)
from cis.storage.sqlite import Migration

__all__ = ["ENTRY_POINT_GROUP", "InstalledSkill", "installed_skills", "load_skill"]

ENTRY_POINT_GROUP: Final = "cis.skills"


@dataclass(frozen=True, slots=True)
class InstalledSkill:
    name: str
    value: str
    """``module:Class`` as the entry point says."""
    distribution: str | None
    version: str | None
    entry_point: metadata.EntryPoint


def installed_skills() -> dict[str, InstalledSkill]:
    """Every skill offered through the entry-point group, by name (the first of duplicates)."""
    found: dict[str, InstalledSkill] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:
            continue
        dist = entry.dist
        found[entry.name] = InstalledSkill(
            name=entry.name,
            value=entry.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
            entry_point=entry,
        )
    return dict(sorted(found.items()))


def load_skill(installed: InstalledSkill) -> Skill:
    """Import, instantiate and check a skill; ``SkillError`` says what is wrong."""
    try:
        cls = installed.entry_point.load()
    except Exception as exc:
        raise SkillError(
            f"skill {installed.name}: cannot import {installed.value} ({type(exc).__name__})"
        ) from exc
    if not isinstance(cls, type):
        raise SkillError(f"skill {installed.name}: {installed.value} is not a class")
    try:
        skill = cls()
    except Exception as exc:
        raise SkillError(
            f"skill {installed.name}: {installed.value}() failed ({type(exc).__name__})"
        ) from exc
    check_skill(skill, installed.name)
    return skill  # type: ignore[no-any-return]


def check_skill(skill: Any, expected_name: str | None = None) -> None:
    """Check the shapes ``Skill`` promises; raise ``SkillError`` naming the first mismatch."""
    name = validate_skill_name(getattr(skill, "name", None))
    if expected_name is not None and name != expected_name:
        raise SkillError(f"skill {expected_name}: its class calls itself {name!r}")
    rooms = getattr(skill, "rooms", None)
    if not isinstance(rooms, Sequence) or not all(isinstance(r, RoomSpec) for r in rooms):
        raise SkillError(f"skill {name}: rooms must be a sequence of RoomSpec")
    if len({r.localpart for r in rooms}) != len(rooms):
        raise SkillError(f"skill {name}: two rooms share a localpart")
    event_types = getattr(skill, "event_types", None)
    if not isinstance(event_types, Mapping):
        raise SkillError(f"skill {name}: event_types must map event types to power levels")
    for event_type, level in event_types.items():
        validate_event_type(name, event_type)
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 100:
            raise SkillError(f"skill {name}: the power level of {event_type} must be 0-100")
    migrations = getattr(skill, "migrations", None)
    if not isinstance(migrations, Sequence) or not all(
        isinstance(m, Migration) for m in migrations
    ):
        raise SkillError(f"skill {name}: migrations must be a sequence of Migration")
    for version, migration in enumerate(migrations, start=1):
        if migration.version != version:
            raise SkillError(f"skill {name}: migrations must be numbered 1..N")
        for statement in migration.statements:
            if "cis_" in statement.lower():
                raise SkillError(f"skill {name}: tables named cis_* belong to the host")
    for method in ("init", "on_event"):
        if not inspect.iscoroutinefunction(getattr(skill, method, None)):
            raise SkillError(f"skill {name}: {method} must be an async method")
