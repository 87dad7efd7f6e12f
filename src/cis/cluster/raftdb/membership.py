"""Talking to members over the Raft port: join, remove and the empty-node check.

pysyncobj lets a connection that completed the encrypted handshake (so it holds the cluster
secret) send a *utility message*, a list whose first item names a command; the service
registers three (``cis_info``, ``cis_join``, ``cis_remove``, handled in ``db.py``) and talks to
them with pysyncobj's own ``TcpUtility`` client. Replies are plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pysyncobj.utility import TcpUtility, UtilityException

from cis.cluster.raftdb.errors import MembershipError
from cis.cluster.raftdb.transport import AeadEncryptor
from cis.log import get_logger

__all__ = ["ask", "ask_any"]

log = get_logger(__name__)


def ask(secret: str, address: str, command: list[Any], timeout: float = 3.0) -> dict[str, Any]:
    """Send one utility command to the member at ``address``; its reply as a dict."""
    utility = TcpUtility(password=None, timeout=timeout)
    # The members speak AES-GCM (transport.AeadEncryptor), not pysyncobj's Fernet.
    utility._TcpUtility__connection.encryptor = AeadEncryptor(secret)
    try:
        reply = utility.executeCommand(address, command)
    except UtilityException as exc:
        raise MembershipError(f"{address} did not answer: {exc}") from exc
    if not isinstance(reply, dict):
        raise MembershipError(f"{address} answered {str(reply)[:80]!r}")
    return reply


def ask_any(
    secret: str, addresses: Iterable[str], command: list[Any], timeout: float = 3.0
) -> tuple[str, dict[str, Any]]:
    """``ask`` each address in turn; the first answer (address, reply)."""
    errors = []
    for address in addresses:
        try:
            return address, ask(secret, address, command, timeout)
        except MembershipError as exc:
            errors.append(str(exc))
    raise MembershipError("; ".join(errors) or "no member to ask")


def reply_error(reply: Mapping[str, Any]) -> str | None:
    if reply.get("ok") is True:
        return None
    error = reply.get("error")
    return str(error) if error else "refused"
