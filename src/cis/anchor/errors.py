"""Anchor errors::

CisError
└── AnchorError
    ├── InvalidRecord   a heartbeat or signed request that fails its checks
    └── AnchorRefused   the anchor answered with an error (status, errcode)
        └── ClockSkew   the anchor's clock and ours differ by more than 300 s
"""

from __future__ import annotations

from cis.errors import CisError


class AnchorError(CisError):
    """Something went wrong with an anchor."""


class InvalidRecord(AnchorError):
    """A record or request that does not pass its checks.

    ``forged`` is True when the shape was right but the identity or signature was not.
    """

    def __init__(self, message: str, *, forged: bool = False) -> None:
        super().__init__(message)
        self.forged = forged


class AnchorRefused(AnchorError):
    """The anchor refused a request; ``status`` and ``errcode`` are what it said."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(f"anchor refused ({status} {errcode}): {message}")
        self.status = status
        self.errcode = errcode


class ClockSkew(AnchorRefused):
    """The anchor refused our timestamp as too far from its clock."""

    def __init__(self, status: int, errcode: str, message: str, anchor_ts: int, local_ts: int):
        super().__init__(status, errcode, message)
        self.anchor_ts = anchor_ts
        self.local_ts = local_ts

    @property
    def skew_ms(self) -> int:
        """How far our clock is ahead of the anchor's (negative: behind)."""
        return self.local_ts - self.anchor_ts
