"""What a session's bridge loop is handed, one class per kind of item: frozen and slotted,
so an item is read by name, never by position, and a type checker sees every kind."""

from __future__ import annotations

from dataclasses import dataclass

from slng_fast.errors import GatewayError

Frame = str | bytes


@dataclass(frozen=True, slots=True)
class FromClient:
    """A message from the client; ``rate_wait``: the messages-per-minute answer for a
    text frame when the reader asked the limits backend already."""

    frame: Frame
    rate_wait: float | None = None


@dataclass(frozen=True, slots=True)
class FromUpstream:
    """A provider's message that the data plane does not carry."""

    epoch: int
    frame: Frame
    received_at: float


@dataclass(frozen=True, slots=True)
class UpstreamConnected:
    """The upstream's connection is open (its messages come after this)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    epoch: int
    message: str
    status: int | None = None  # a refused handshake's HTTP status


@dataclass(frozen=True, slots=True)
class UpstreamClosed:
    epoch: int
    code: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ClientTooLarge:
    """The client sent a message over its tier's size: the frame layer read no more."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeepaliveDue:
    """The upstream has been quiet for its dialect's keep-alive interval."""


@dataclass(frozen=True, slots=True)
class EndRequested:
    """End the session: ``reason`` is a ``session_ended`` reason or one of the I/O
    layer's (``slow_client``, ``heartbeat_timeout``, ``shutdown``, ``outside_end``, whose
    ``error`` says why, e.g. a revoked key)."""

    reason: str
    error: GatewayError | None = None


InboxItem = (FromClient | FromUpstream | UpstreamConnected | UpstreamFailed | UpstreamClosed
             | ClientTooLarge | KeepaliveDue | EndRequested)


def item_size(item: InboxItem) -> int:
    """Bytes an item holds, for the inbox's byte bound: its frame, if it carries one."""
    if isinstance(item, (FromClient, FromUpstream)):
        return len(item.frame) + 64
    return 64
