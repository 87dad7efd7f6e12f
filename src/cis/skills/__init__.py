"""Skills: plugins that are views of Matrix rooms (seed 000 §4).

The contract a skill is written against is re-exported here (``cis.skills.contract`` holds it,
docs/skills.md explains it); ``cis.skills.host`` runs skills inside a node; ``cis.skills.git``
and ``cis.skills.memory`` are the built-in skills, written against the same contract.

The names load lazily, so a light tool that imports a submodule (``git-remote-cis`` imports
``cis.skills.git.helper`` on every git operation) does not pay for the Matrix core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cis.matrix import Event
    from cis.skills.contract import (
        CONTRACT_VERSION,
        POWER_ADMIN,
        POWER_MEMBER,
        POWER_SOVEREIGN,
        CommandError,
        CommandHandler,
        DuplexStream,
        EventHandler,
        Migration,
        PeerHandler,
        RoomSpec,
        Skill,
        SkillApi,
        SkillDatabase,
        SkillDisabled,
        SkillError,
        SkillUnavailable,
        StreamHandler,
    )

__all__ = [
    "CONTRACT_VERSION",
    "POWER_ADMIN",
    "POWER_MEMBER",
    "POWER_SOVEREIGN",
    "CommandError",
    "CommandHandler",
    "DuplexStream",
    "Event",
    "EventHandler",
    "Migration",
    "PeerHandler",
    "RoomSpec",
    "Skill",
    "SkillApi",
    "SkillDatabase",
    "SkillDisabled",
    "SkillError",
    "SkillUnavailable",
    "StreamHandler",
]


def __getattr__(name: str) -> Any:
    if name == "Event":
        from cis.matrix import Event

        return Event
    if name in __all__:
        from cis.skills import contract

        return getattr(contract, name)
    raise AttributeError(f"module 'cis.skills' has no attribute {name!r}")
