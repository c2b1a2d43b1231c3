"""What a sans-I/O session asks its I/O layer to do. The gateway executes them in
order; upstream frames are tagged with the epoch of the connection they belong to so
that a session can ignore late frames from an upstream it has already closed."""

from __future__ import annotations

from dataclasses import dataclass

from slng_fast._native import AudioRelay, AudioUplink
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
class StartRelay:
    """Lend the stream of upstream ``epoch`` to the data plane: its steady-state audio
    messages go through ``relay`` (the session's own output state) straight to the
    client, until the first message the relay does not own, which comes back to the
    session as usual, or until `StopRelay`. What went through is reported to the
    session (`TtsSession.relayed`). An I/O layer without a data plane ignores it."""

    epoch: int
    relay: AudioRelay


@dataclass(frozen=True, slots=True)
class StopRelay:
    """Take the stream of upstream ``epoch`` back from the data plane, at once."""

    epoch: int


@dataclass(frozen=True, slots=True)
class StartUplink:
    """The STT mirror of `StartRelay`: lend the client's steady-state audio to the data
    plane, ``uplink`` (the session's own input state) carrying it straight to upstream
    ``epoch``, until the first client message it does not own, which comes to the
    session as usual, or until `StopUplink`. What went through is reported to the
    session (`SttSession.uplinked`). An I/O layer without a data plane ignores it."""

    epoch: int
    uplink: AudioUplink


@dataclass(frozen=True, slots=True)
class StopUplink:
    """Take the client's audio back from the data plane, at once."""

    epoch: int


@dataclass(frozen=True, slots=True)
class CloseClient:
    code: int
    reason: str


Action = (SendClient | OpenUpstream | SendUpstream | CloseUpstream | StartRelay | StopRelay
          | StartUplink | StopUplink | CloseClient)
