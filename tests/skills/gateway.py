"""The gateway skill tests use without a whole node: the Client-Server API's own event
creation (``EventCreator`` on the node's Room Store), as ``cis.node`` wires it."""

from __future__ import annotations

from cis.clock import Clock
from cis.handlers.room_cache import EventCreator, RoomCache, Signer
from cis.identity import NodeIdentity
from cis.skills.gateway import CreatorGateway
from cis.storage.rooms.manager import RoomStoreManager


def creator_gateway(
    rooms: RoomStoreManager, identity: NodeIdentity, clock: Clock
) -> CreatorGateway:
    signer = Signer(identity.server_name, identity.key_id, identity.signing_key)
    return CreatorGateway(EventCreator(RoomCache(rooms, clock), signer, clock))
