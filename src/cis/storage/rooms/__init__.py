"""The Room Store (seed 001): one SQLite file per room.

- ``manager.RoomStoreManager``: the node's rooms, the hot-room LRU, subscriptions.
- ``store.RoomStore``: one room's events (store, query, export/import, state, sync positions).
- ``types``: ``EventFilter``, ``Pagination``, ``Page``, ``RoomStats``, ``TxnKey``, ``RoomInfo``.
- ``subscriptions``: position-based subscriptions (``Subscription``, ``SubscriptionLagged``).
- ``schema`` and ``txns``: the file's schema and every statement on it.
- ``index``: the ``RoomIndex`` seam to ``node.db``'s registry and derived indexes.
"""

from cis.storage.rooms.manager import RoomStoreManager
from cis.storage.rooms.store import RoomStore
from cis.storage.rooms.subscriptions import Subscription, SubscriptionClosed, SubscriptionLagged
from cis.storage.rooms.types import (
    Direction,
    EventFilter,
    Page,
    Pagination,
    RoomInfo,
    RoomStats,
    RoomStatus,
    TxnKey,
)

__all__ = [
    "Direction",
    "EventFilter",
    "Page",
    "Pagination",
    "RoomInfo",
    "RoomStats",
    "RoomStatus",
    "RoomStore",
    "RoomStoreManager",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionLagged",
    "TxnKey",
]
