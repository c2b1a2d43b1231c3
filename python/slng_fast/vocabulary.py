"""The words every layer shares: a WebSocket frame, the request that opens an upstream,
the settings a client asks for, what an endpoint is and can do, the events a dialect reports
from upstream frames, and what a session needs of a dialect. It sits at the bottom:
``protocol/`` and ``providers/`` both import it, and it imports neither (no I/O here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

Frame = str | bytes  # a WebSocket message: text (str) or binary (bytes)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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

@dataclass(frozen=True, slots=True)
class UpstreamReady:
    sample_rate: int | None = None
    voices: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes
    sample_rate: int
    sample_format: str = "pcm16"  # or "f32"


@dataclass(frozen=True, slots=True)
class RelayFraming:
    """Which of a provider's messages the data plane may carry (`_native.AudioRelay`):
    ``binary`` (every binary frame is PCM16 at the dialect's rate and nothing else),
    ``elevenlabs`` (JSON that is only base64 audio of ``context_id``), ``cartesia`` (a
    ``chunk`` of ``context_id``) or ``kyutai`` (moshi-server's MessagePack ``Audio``,
    float32: the relay's format must be ``f32``)."""

    name: str
    context_id: str | None = None


@dataclass(frozen=True, slots=True)
class UtteranceDone:
    pass


@dataclass(frozen=True, slots=True)
class Words:
    words: tuple[str, ...]
    start_ms: tuple[float, ...]
    end_ms: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    confidence: float | None = None
    # Seconds into the session's audio, where the recogniser says.
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True, slots=True)
class FinalTranscript:
    text: str
    audio_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamError:
    message: str
    retryable: bool = False
    fatal: bool = False
    code: str = "provider_error"


@dataclass(frozen=True, slots=True)
class Reply:
    """Frames the dialect wants sent upstream in answer to a frame (e.g. Kyutai's silence
    while a Marker is outstanding). The session sends them on the current upstream."""

    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame the dialect understood and has nothing to report for (e.g. a pong)."""

    note: str = ""


UpstreamEvent = (UpstreamReady | Audio | UtteranceDone | Words | Transcript
                 | FinalTranscript | UpstreamError | Reply | Ignored)


class TtsDialect(ABC):
    """What a TTS session needs of a dialect (``SlngDialect`` is the reference).

    Events come out of ``receive`` in utterance order: one ``UtteranceDone`` per flush
    that sent frames, after that utterance's ``Audio``. A dialect that can stop natively
    (``stop_by_reconnect = False``) returns the frames that stop every utterance in flight
    from ``stop()`` and then swallows whatever the provider still sends for them. A
    dialect whose ``capabilities.configure_reconnects`` is False applies ``configure``
    with the frames it returns. ``keepalive_interval`` (seconds, or None) is how long the
    upstream may stay quiet before ``keepalive()`` frames are sent.

    The optional capabilities are the methods and flags below with a body: their
    defaults are what a dialect without the capability does, so a session calls them
    unconditionally and never asks whether a dialect has them."""

    capabilities: Capabilities
    stop_by_reconnect: bool
    sample_rate: int
    keepalive_interval: float | None
    api_key: str | None = None

    @property
    def relay_framing(self) -> RelayFraming | None:
        """How the provider's steady-state audio messages are framed, for the data plane,
        or None: the session sees every message. Read
        each time the session considers lending the stream, so a dialect may make it None
        while its binary frames mean something else (audio of a cleared flush, say)."""
        return None

    @abstractmethod
    def request(self, settings: Settings) -> UpstreamRequest: ...
    @abstractmethod
    def native_request(self, settings: Settings) -> UpstreamRequest: ...
    @abstractmethod
    def open_frames(self, settings: Settings) -> list[Frame]: ...
    @abstractmethod
    def input_text(self, text: str) -> list[Frame]: ...
    @property
    @abstractmethod
    def has_buffered_text(self) -> bool: ...
    @abstractmethod
    def flush(self) -> list[Frame]: ...
    @abstractmethod
    def clear(self) -> list[Frame]: ...
    @abstractmethod
    def stop(self) -> list[Frame]: ...
    @abstractmethod
    def configure(self, settings: Settings) -> list[Frame]: ...
    @abstractmethod
    def keepalive(self) -> list[Frame]: ...
    @abstractmethod
    def receive(self, frame: Frame) -> list[UpstreamEvent]: ...

    def prefer_output(self, sample_rate: int) -> None:
        """At ``init``: ask the provider for PCM at the client's rate, where it can."""
        return None

    def configure_needs_reconnect(self, settings: Settings) -> bool:
        """True when a setting lives in the provider's URL, so changing it reconnects even
        on a dialect that otherwise configures in place."""
        return False

    def close_error(self, code: int | None, reason: str | None = None) -> UpstreamError | None:
        """The provider's close frame read as an error, where its close codes say one."""
        return None

    def passthrough_request(self, path: str, query: str, api_key: str | None) -> UpstreamRequest:
        """The upstream for a drop-in SDK route (the provider's own path and query)."""
        raise LookupError(f"{type(self).__name__} has no drop-in route")

    def native_audio_ms(self, frame: Frame) -> float:
        """Milliseconds of audio in a provider's frame, in native mode (usage)."""
        return len(frame) / (self.sample_rate * 2 / 1000.0) if isinstance(frame, bytes) else 0.0

    def native_client_frame(self, frame: Frame) -> None:
        """Sees the client's frames in native mode (a provider whose requests name their
        audio format)."""
        return None


class SttDialect(ABC):
    """What an STT session needs of a dialect (``UnifiedSttDialect`` is the reference).
    ``audio`` takes PCM already converted to ``model_rate`` and ``model_format``
    ("pcm16" or "f32"); ``finalize`` answers, through ``receive``, with exactly one
    ``FinalTranscript`` (its text may be empty: the session then joins the final
    segments it saw since the previous one), covering all the audio sent before it however
    fast it came. ``now`` is the time the audio or the finalize is sent.

    Optional capabilities, with the defaults of a dialect that lacks them: ``deadline()``
    and ``on_deadline(now)`` (a dialect that needs the clock, such as WhisperLive's, whose
    finalize only time can settle when the server is silent), ``is_native_frame(frame)``
    and ``native_audio_ms(frame)``."""

    model_rate: int
    model_format: str
    keepalive_interval: float | None

    @abstractmethod
    def request(self) -> UpstreamRequest: ...
    @abstractmethod
    def open_frames(self, language: str | None, extras: dict[str, Any]) -> list[Frame]: ...
    @abstractmethod
    def audio(self, pcm: bytes, now: float) -> list[Frame]: ...
    @abstractmethod
    def finalize(self, now: float) -> list[Frame]: ...
    @abstractmethod
    def keepalive(self) -> list[Frame]: ...
    @abstractmethod
    def receive(self, frame: Frame) -> list[UpstreamEvent]: ...

    def deadline(self) -> float | None:
        """When the dialect next needs ``on_deadline``; None while it needs no clock."""
        return None

    def on_deadline(self, now: float) -> list[UpstreamEvent]:
        """Called once the time ``deadline()`` gave has passed; may answer with a
        ``FinalTranscript``."""
        return []

    def is_native_frame(self, frame: bytes) -> bool:
        """A first binary frame in the provider's own format makes the session native."""
        return False

    # -- the data plane (docs/decisions.md, "The data plane boundary") --------------------
    @property
    def uplink_framing(self) -> str | None:
        """How the provider takes audio, for the data plane (`_native.AudioUplink`):
        ``binary`` (``audio`` returns the PCM as one binary frame, or nothing for none)
        or ``kyutai`` (moshi-server's ``Audio`` of exactly 1920 float32 samples, the rest
        held back); None: the session sees every client frame."""
        return None

    def lend_held(self) -> bytes:
        """The audio ``audio`` holds back (taken: the data plane goes on from it)."""
        return b""

    def take_held(self, held: bytes) -> None:
        """The audio the data plane held back, when the session takes the stream back."""
        return None

    def uplinked(self, nbytes: int, frames: int, now: float) -> None:
        """The data plane sent ``nbytes`` of the model's audio in ``frames`` frames: the
        dialect counts them as if ``audio`` had made them."""
        return None

    def native_audio_ms(self, frame: bytes) -> float:
        """Milliseconds of audio in a native frame (usage): PCM16 at 16 kHz by default."""
        return len(frame) / 32.0


Dialect = TtsDialect | SttDialect
