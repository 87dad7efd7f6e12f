"""``GET /capabilities`` (Client-Server API §"Capabilities negotiation").

Room versions 10 and 11 are stable and 11 is the default (the Matrix core refuses others).
Display names and avatars can be changed; passwords and third-party ids cannot be changed
through the Client-Server API here (accounts are managed with ``cis-node user``).
"""

from __future__ import annotations

from typing import Any, Final

DEFAULT_ROOM_VERSION: Final = "11"
SUPPORTED_ROOM_VERSIONS: Final = ("10", "11")


def capabilities() -> dict[str, Any]:
    return {
        "capabilities": {
            "m.room_versions": {
                "default": DEFAULT_ROOM_VERSION,
                "available": dict.fromkeys(SUPPORTED_ROOM_VERSIONS, "stable"),
            },
            "m.change_password": {"enabled": False},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": False},
        }
    }
