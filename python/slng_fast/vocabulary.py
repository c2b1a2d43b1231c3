"""The words every layer shares: a WebSocket frame, the request that opens an upstream,
the settings a client asks for, what an endpoint is and can do, the events a dialect reports
from upstream frames, and what a session needs of a dialect. It sits at the bottom:
``protocol/`` and ``providers/`` both import it, and it imports neither (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Frame = str | bytes  # a WebSocket message: text (str) or binary (bytes)


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


@dataclass(frozen=True)
class Settings:
    """What `init` and `configure` set: the gateway's own fields and provider extras."""

    voice_id: str | None = None
    language: str | None = None
    style: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def merged(self, newer: Settings) -> Settings:
        return Settings(
            voice_id=newer.voice_id if newer.voice_id is not None else self.voice_id,
            language=newer.language if newer.language is not None else self.language,
            style=newer.style if newer.style is not None else self.style,
            extras={**self.extras, **newer.extras},
        )


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
    # The environment variable holding the provider credential; a provider that has one
    # set here refuses sessions (provider_unavailable, 1013) while it has no credential.
    key_env: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


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
class Reply:
    """Frames the dialect wants sent upstream in answer to a frame (e.g. Kyutai's silence
    while a Marker is outstanding). The session sends them on the current upstream."""

    frames: tuple[Frame, ...]


@dataclass(frozen=True)
class Ignored:
    """A frame the dialect understood and has nothing to report for (e.g. a pong)."""

    note: str = ""


UpstreamEvent = (UpstreamReady | Audio | UtteranceDone | Words | Transcript
                 | FinalTranscript | UpstreamError | Reply | Ignored)


class TtsDialect(Protocol):
    """What a TTS session needs of a dialect (``SlngDialect`` is the reference).

    Events come out of ``receive`` in utterance order: one ``UtteranceDone`` per flush
    that sent frames, after that utterance's ``Audio``. A dialect that can stop natively
    (``stop_by_reconnect = False``) returns the frames that stop every utterance in flight
    from ``stop()`` and then swallows whatever the provider still sends for them. A
    dialect whose ``capabilities.configure_reconnects`` is False applies ``configure``
    with the frames it returns. ``keepalive_interval`` (seconds, or None) is how long the
    upstream may stay quiet before ``keepalive()`` frames are sent.

    Optional, asked for only where a dialect has them: ``prefer_output(sample_rate)`` (at
    ``init``: ask the provider for PCM at the client's rate), ``configure_needs_reconnect(
    settings)`` (a setting that lives in the URL), ``close_error(code, reason)`` (an
    ``UpstreamError`` for the provider's close frame) and, for the drop-in SDK routes,
    ``passthrough_request(path, query, api_key)``. For usage in native mode:
    ``native_audio_ms(frame)`` (milliseconds of audio in a provider's frame; without it,
    binary frames count as PCM16 at ``sample_rate``) and ``native_client_frame(frame)``
    (sees the client's frames, for a provider whose requests name their audio format)."""

    capabilities: Capabilities
    stop_by_reconnect: bool
    sample_rate: int
    keepalive_interval: float | None

    def request(self, settings: Any) -> UpstreamRequest: ...
    def native_request(self, settings: Any) -> UpstreamRequest: ...
    def open_frames(self, settings: Any) -> list[Frame]: ...
    def input_text(self, text: str) -> list[Frame]: ...
    @property
    def has_buffered_text(self) -> bool: ...
    def flush(self) -> list[Frame]: ...
    def clear(self) -> list[Frame]: ...
    def stop(self) -> list[Frame]: ...
    def configure(self, settings: Any) -> list[Frame]: ...
    def keepalive(self) -> list[Frame]: ...
    def receive(self, frame: Frame) -> list[UpstreamEvent]: ...


class SttDialect(Protocol):
    """What an STT session needs of a dialect (``UnifiedSttDialect`` is the reference).
    ``audio`` takes PCM already converted to ``model_rate`` and ``model_format``
    ("pcm16" or "f32"); ``finalize`` answers, through ``receive``, with exactly one
    ``FinalTranscript`` (its text may be empty: the session then joins the final
    segments it saw since the previous one), covering all the audio sent before it however
    fast it came. ``now`` is the time the audio or the finalize is sent.

    Optional: ``deadline()`` and ``on_deadline(now)`` (a dialect that needs the clock,
    such as WhisperLive's, whose finalize only time can settle when the server is silent:
    the session calls ``on_deadline`` once the time ``deadline()`` gave has passed, and it
    may answer with a ``FinalTranscript``), ``is_native_frame(frame)`` (a first binary
    frame in the provider's own format makes the session native) and
    ``native_audio_ms(frame)`` (usage of a native frame)."""

    model_rate: int
    model_format: str
    keepalive_interval: float | None

    def request(self) -> UpstreamRequest: ...
    def open_frames(self, language: str | None, extras: dict[str, Any]) -> list[Frame]: ...
    def audio(self, pcm: bytes, now: float) -> list[Frame]: ...
    def finalize(self, now: float) -> list[Frame]: ...
    def keepalive(self) -> list[Frame]: ...
    def receive(self, frame: Frame) -> list[UpstreamEvent]: ...
