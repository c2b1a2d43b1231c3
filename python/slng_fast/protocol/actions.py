"""What a sans-I/O session asks its I/O layer to do. The gateway executes them in
order; upstream frames are tagged with the epoch of the connection they belong to so
that a session can ignore late frames from an upstream it has already closed."""

from __future__ import annotations

from dataclasses import dataclass

from slng_fast.vocabulary import Frame, UpstreamRequest


@dataclass(frozen=True, slots=True)
class SendClient:
    frame: Frame
    # bytes that are UTF-8 JSON text (audio_chunk frames from the native core).
    text: bool = False


@dataclass(frozen=True, slots=True)
class OpenUpstream:
    epoch: int
    request: UpstreamRequest


@dataclass(frozen=True, slots=True)
class SendUpstream:
    frame: Frame


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    epoch: int


@dataclass(frozen=True, slots=True)
class CloseClient:
    code: int
    reason: str


Action = SendClient | OpenUpstream | SendUpstream | CloseUpstream | CloseClient
