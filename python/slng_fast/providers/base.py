"""What every dialect shares: the events it turns upstream frames into, the request
that opens an upstream, and the capabilities it declares. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Frame = Union[str, bytes]  # a WebSocket message: text (str) or binary (bytes)


@dataclass(frozen=True)
class UpstreamRequest:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    supports_stop: bool
    supports_clear: bool
    supports_configure: bool
    configure_reconnects: bool
    word_timestamps: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "supports_stop": self.supports_stop,
            "supports_clear": self.supports_clear,
            "supports_configure": self.supports_configure,
            "configure_reconnects": self.configure_reconnects,
            "word_timestamps": self.word_timestamps,
        }


def voice_ids(listing: Any) -> tuple[str, ...]:
    """Voice ids from an engine's listing: plain strings or objects with an ``id``."""
    if not isinstance(listing, (list, tuple)):
        return ()
    ids = []
    for entry in listing:
        if isinstance(entry, str):
            ids.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("id"), str):
            ids.append(entry["id"])
    return tuple(ids)


# ---- events a dialect reports from upstream frames ---------------------------

@dataclass(frozen=True)
class UpstreamReady:
    sample_rate: int | None = None
    voices: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Audio:
    data: bytes
    sample_rate: int
    sample_format: str = "pcm16"  # or "f32"


@dataclass(frozen=True)
class UtteranceDone:
    pass


@dataclass(frozen=True)
class Words:
    words: tuple[str, ...]
    start_ms: tuple[float, ...]
    end_ms: tuple[float, ...]


@dataclass(frozen=True)
class Transcript:
    text: str
    is_final: bool
    confidence: float | None = None


@dataclass(frozen=True)
class FinalTranscript:
    text: str
    audio_duration_seconds: float | None = None


@dataclass(frozen=True)
class UpstreamError:
    message: str
    retryable: bool = False
    fatal: bool = False
    code: str = "provider_error"


@dataclass(frozen=True)
class Ignored:
    """A frame the dialect understood and has nothing to report for (e.g. a pong)."""

    note: str = ""


UpstreamEvent = Union[UpstreamReady, Audio, UtteranceDone, Words, Transcript,
                      FinalTranscript, UpstreamError, Ignored]


@dataclass(frozen=True)
class Endpoint:
    """A registry entry: which dialect serves an endpoint name, with its defaults."""

    name: str
    kind: str  # "tts" or "stt"
    dialect: str
    default_voice: str | None = None
    voices: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    sample_rate: int = 24000
    default_url: str | None = None
    needs_url: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
