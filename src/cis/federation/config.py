"""Tunnel timings and limits, with the values docs/federation.md gives as defaults.

Every field is configuration so that tests (and small deployments) can shorten the intervals;
``TunnelConfig()`` is what a node runs with unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from cis.federation.reliability import DEFAULT_MAX_UNACKED_BYTES, DEFAULT_MAX_UNACKED_FRAMES


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    handshake_timeout: float = 10.0
    """Seconds from connect (or accept) to an authenticated tunnel; then close 1008."""
    max_handshakes: int = 64
    """Handshakes in progress at once; an incoming one beyond it is closed with 1013."""
    ping_interval: float = 5.0
    """Seconds between application pings on each tunnel (they measure RTT)."""
    silence_timeout: float = 15.0
    """A tunnel that received nothing for this long is closed and the peer marked offline."""
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    ack_delay: float = 0.05
    """Seconds an acknowledgement may wait for a frame to ride on before it goes alone."""
    ack_every: int = 64
    """Delivered frames after which an acknowledgement goes at once."""
    send_window: int = 1024
    """Unacknowledged frames past which ``send`` waits while the peer is online (flow
    control: a slow peer slows its sender instead of overflowing its outbox)."""
    max_unacked_frames: int = DEFAULT_MAX_UNACKED_FRAMES
    max_unacked_bytes: int = DEFAULT_MAX_UNACKED_BYTES
    """Bounds of a peer's outbox while it is offline; beyond them the oldest frames go."""
    delivery_queue: int = 10_000
    """Received frames waiting for the handler, per peer, before reading pauses."""
    write_high_water: int = 4 * 1024 * 1024
    """Bytes queued on a tunnel before ``send`` waits for them to drain."""
    request_timeout: float = 30.0
    close_timeout: float = 2.0
    """Seconds a closing tunnel may take to flush and finish the WebSocket close handshake."""

    def __post_init__(self) -> None:
        if self.silence_timeout <= self.ping_interval:
            raise ValueError("silence_timeout must be longer than ping_interval")
        if min(self.handshake_timeout, self.ping_interval, self.close_timeout) <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if not 0 < self.send_window <= self.max_unacked_frames:
            raise ValueError("send_window must be between 1 and max_unacked_frames")
        if self.max_handshakes < 1:
            raise ValueError("max_handshakes must be at least 1")
