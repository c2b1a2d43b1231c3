"""The engines' wire formats as plain data: parse client frames, build server events.

No I/O and no clock reads (times are arguments); the trio servers in
``slng_fast.engines.espeak_server`` and ``sphinx_server`` do the sockets.

Two protocols live here:

- the SLNG model-server dialect spoken by the espeak engine (PROTOCOL.md section 8):
  a JSON settings object, plain-text frames, ``{"type":"control","action":...}``,
  the text ``__END__``;
- the unified STT protocol spoken by the pocketsphinx engine (PROTOCOL.md section 5), read
  and written with the gateway's own ``slng_fast.protocol`` commands and events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands, events

__all__ = [
    "END_OF_INPUT",
    "Control",
    "EndOfInput",
    "InvalidFrame",
    "SettingsError",
    "TextChunk",
    "TtsSettings",
    "TtsSettingsFrame",
    "dumps",
    "check_start",
    "parse_stt_text",
    "parse_tts_frame",
    "parse_tts_settings",
    "stt_ready",
    "stt_session_ended",
    "stt_transcript",
    "tts_error",
    "tts_flushed",
    "tts_ready",
]

END_OF_INPUT = "__END__"


def dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


# -- SLNG model-server dialect (TTS) -------------------------------------------------------


class SettingsError(ValueError):
    """A settings object with a field of the wrong type or out of range."""


@dataclass(frozen=True)
class TtsSettings:
    """What the espeak engine takes from a settings object.

    ``voice``/``language`` are resolved by the synthesizer; ``rate`` is words per
    minute. Fields eSpeak cannot use (``buffer_size``, ``max_tokens``,
    ``repetition_penalty``, ``temperature``, ``top_p``, ...) are listed in
    ``ignored``.
    """

    voice: str | None = None
    language: str | None = None
    rate: float | None = None
    ignored: tuple[str, ...] = ()


_SPEED_NORMAL_WPM = 175


def _optional_str(obj: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise SettingsError(f"{name} must be a string, got {type(value).__name__}")
        return value
    return None


def _optional_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    return float(value)


def parse_tts_settings(obj: dict[str, Any]) -> TtsSettings:
    """Read a settings object. ``voice_id`` is accepted for ``voice``; ``speed`` (a
    multiplier of the normal 175 words per minute) for ``rate``."""
    voice = _optional_str(obj, "voice", "voice_id")
    language = _optional_str(obj, "language")
    rate = _optional_number(obj, "rate")
    speed = _optional_number(obj, "speed")
    if rate is None and speed is not None:
        if speed <= 0:
            raise SettingsError(f"speed must be positive, got {speed}")
        rate = speed * _SPEED_NORMAL_WPM
    known = {"type", "voice", "voice_id", "language", "rate", "speed"}
    ignored = tuple(sorted(k for k in obj if k not in known))
    return TtsSettings(voice=voice, language=language, rate=rate, ignored=ignored)


@dataclass(frozen=True)
class TtsSettingsFrame:
    settings: dict[str, Any]


@dataclass(frozen=True)
class Control:
    action: str


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class EndOfInput:
    pass


@dataclass(frozen=True)
class InvalidFrame:
    message: str


TtsFrame = TtsSettingsFrame | Control | TextChunk | EndOfInput | InvalidFrame


def parse_tts_frame(text: str) -> TtsFrame:
    """Classify one text frame of the SLNG dialect.

    ``__END__`` (surrounding whitespace allowed) ends the input. A frame that is a
    JSON object is a command: ``{"type":"control","action":...}`` a control, an
    object without ``type`` (or with ``"type":"settings"``) settings. Anything else
    is text to speak, kept exactly as sent.
    """
    if text.strip() == END_OF_INPUT:
        return EndOfInput()
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return TextChunk(text)
        if isinstance(obj, dict):
            kind = obj.get("type")
            if kind == "control":
                action = obj.get("action")
                if not isinstance(action, str):
                    return InvalidFrame("control needs a string action")
                return Control(action)
            if kind is None or kind == "settings":
                return TtsSettingsFrame(obj)
            return InvalidFrame(f"unknown message type {kind!r}")
    return TextChunk(text)


def tts_ready(
    sample_rate: int,
    *,
    voices: list[dict[str, Any]],
    languages: list[str],
    variants: list[dict[str, Any]],
    default_voice: str,
    engine: str,
    version: str,
) -> dict[str, Any]:
    """The first frame: the audio rate plus (our extension) what the engine offers."""
    return {
        "type": "ready",
        "sample_rate": sample_rate,
        "engine": engine,
        "version": version,
        "default_voice": default_voice,
        "voices": voices,
        "variants": variants,
        "languages": languages,
        "supports_stop": True,
    }


def tts_flushed(*, interrupted: bool = False) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "flushed"}
    if interrupted:
        event["interrupted"] = True
    return event


def tts_error(message: str, *, code: str = "invalid_parameter") -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


# -- unified STT protocol: the gateway's own parser and events (slng_fast.protocol) -------

STT_SAMPLE_RATE = 16000
STT_ENCODING = "pcm16"
STT_LANGUAGES = ("en",)
STT_CAPABILITIES = {
    "partial_transcripts": True,
    "finalize": True,
    "word_timestamps": False,
    "languages": list(STT_LANGUAGES),
    "sample_rates": [STT_SAMPLE_RATE],
    "encodings": [STT_ENCODING],
}
_STT_COMMANDS = ("start", "finalize", "stop", "ping")


def parse_stt_text(text: str) -> commands.SttCommand:
    """A text frame of the unified STT protocol as the gateway's own command. Raises
    ``GatewayError`` (never fatal: the engine answers with an error event) for a frame it
    refuses: not a JSON object, no string ``type``, a command STT does not have, a field
    of the wrong type."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise GatewayError(errors.INVALID_MESSAGE, "text frames must be JSON objects")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise GatewayError(errors.INVALID_MESSAGE, "a command needs a string type")
    if kind not in _STT_COMMANDS:
        raise GatewayError(errors.UNKNOWN_COMMAND, f"unknown command type {kind!r}")
    return commands.parse_stt(kind, obj)


def check_start(start: commands.Start) -> None:
    """What this engine takes of a valid ``start``: 16 kHz PCM16, English. Missing fields
    take those values; others are ``invalid_parameter``."""
    if start.sample_rate_hz not in (None, STT_SAMPLE_RATE):
        raise GatewayError(errors.INVALID_PARAMETER,
                           f"sample_rate {start.sample_rate_hz} is not supported: "
                           f"this engine takes {STT_SAMPLE_RATE} Hz only")
    if start.codec not in (None, STT_ENCODING):
        raise GatewayError(errors.INVALID_PARAMETER, f"encoding {start.codec!r} is not "
                           f"supported: this engine takes {STT_ENCODING} only")
    language = start.language or "en"
    if language.strip().lower().replace("_", "-").split("-")[0] not in STT_LANGUAGES:
        raise GatewayError(errors.INVALID_PARAMETER, f"language {language!r} is not "
                           "supported: this engine recognises English (en) only")


def stt_ready(*, model_id: str, context_id: str) -> str:
    return events.ready_stt(context_id, model_id, STT_SAMPLE_RATE, STT_ENCODING,
                            {"language": "en", "capabilities": STT_CAPABILITIES})


def stt_transcript(*, text: str, is_final: bool, confidence: float, start: float, end: float,
                   context_id: str, now: float) -> str:
    """A partial or segment-final transcript. ``now`` is the wall clock (Unix seconds)
    when it was produced; ``start``/``end`` are seconds into the session's audio."""
    return events.transcript(context_id, text, is_final, round(confidence, 4), now,
                             start=round(start, 3), end=round(end, 3))


def stt_session_ended(*, reason: str, audio_seconds: float, duration_seconds: float,
                      messages: int, context_id: str | None) -> str:
    usage = {"audio_ms": int(round(audio_seconds * 1000)), "messages": messages,
             "duration_ms": int(round(duration_seconds * 1000))}
    return events.session_ended(context_id, reason, usage)
