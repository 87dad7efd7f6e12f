"""Errors of the replicated SQL service::

    CisError
    └── RaftDBError
        ├── ConfigError          a flag, file or secret that cannot be used (the CLI exits 1)
        ├── StatementError       a request that is malformed (HTTP 400)
        │   └── RefusedStatement a statement that must not enter the log (non-deterministic,
        │                        transaction control, a write to ``_cis_*`` …)
        ├── NoLeader             no leader within the wait: the write was never proposed
        ├── NotLeader            a ``weak`` read reached a follower (the service forwards it)
        ├── UnknownOutcome       proposed, but no result within the wait: it may still apply
        ├── ReadUnavailable      a linearizable read could not be confirmed in time
        ├── NodeFailed           this node's state machine stopped (disk full, I/O error …)
        └── MembershipError      a join or remove that the cluster refused

A statement's own SQL error (a constraint, a syntax error) is *not* an exception: it is a
deterministic result, returned to the client as ``{"error": …}`` inside an HTTP 200, exactly as
rqlite does.
"""

from __future__ import annotations

from cis.errors import CisError


class RaftDBError(CisError):
    """Something the replicated SQL service could not do."""


class ConfigError(RaftDBError):
    """A configuration value, file or secret is unusable."""


class StatementError(RaftDBError):
    """A request whose statements cannot be parsed."""


class RefusedStatement(StatementError):
    """A statement the service refuses to replicate."""


class NoLeader(RaftDBError):
    """No leader was reachable within the wait; nothing was applied."""


class NotLeader(RaftDBError):
    """This node is not the leader; ``leader_id`` names the one it knows, if any."""

    def __init__(self, message: str, leader_id: str | None = None) -> None:
        super().__init__(message)
        self.leader_id = leader_id


class UnknownOutcome(RaftDBError):
    """The command was proposed but its result did not arrive in time; it may still apply."""


class ReadUnavailable(RaftDBError):
    """A read at ``linearizable`` or ``strong`` could not be confirmed by a quorum in time."""


class NodeFailed(RaftDBError):
    """The state machine of this node stopped; it serves nothing until restarted."""


class MembershipError(RaftDBError):
    """A membership change was refused or could not be completed."""
