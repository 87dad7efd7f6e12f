"""Positions of the ``node.db`` streams that ``/sync`` tokens carry besides events:
receipts, account data, to-device messages and device-list changes.

Handlers move them after their writes commit (so a position is never handed to a reader
before its row is readable); they are loaded once at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from cis.storage.client import timeline
from cis.storage.database import Database


@dataclass(slots=True)
class StreamCounters:
    """Current positions of the ``node.db`` streams (never moved backwards)."""

    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def advance(self, stream: str, position: int) -> None:
        if position > getattr(self, stream):
            setattr(self, stream, position)

    @classmethod
    async def load(cls, node_db: Database) -> StreamCounters:
        receipts, account_data, to_device, device_lists = await node_db.run_read(
            "stream_tops", timeline.stream_tops
        )
        return cls(receipts, account_data, to_device, device_lists)
