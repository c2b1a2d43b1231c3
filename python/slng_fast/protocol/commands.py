"""Unified client commands as frozen dataclasses, validated from the fields the native
classifier hands back. Wrong types are ``invalid_message``; values out of range are
``invalid_parameter`` (PROTOCOL.md section 7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.vocabulary import Settings

CODECS = {"pcm16": "pcm16", "linear16": "pcm16", "pcm_s16le": "pcm16",
          "mulaw": "mulaw", "ulaw": "mulaw", "pcm_mulaw": "mulaw",
          "alaw": "alaw", "pcm_alaw": "alaw"}
CODEC_SAMPLE_WIDTH = {"pcm16": 2, "mulaw": 1, "alaw": 1}
TTS_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
STT_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Legacy names accepted as aliases (PROTOCOL.md section 4).
ALIASES = {"voice": "voice_id", "encoding": "codec", "sample_rate": "sample_rate_hz",
           "voice_settings": "style"}
# Fields the gateway owns; everything else in init/configure is a provider extra.
_GATEWAY_FIELDS = {"type", "voice_id", "context_id", "codec", "sample_rate_hz", "language",
                   "style", "word_timestamps"}


def invalid(message: str) -> GatewayError:
    return GatewayError(errors.INVALID_MESSAGE, message)


def bad_value(message: str) -> GatewayError:
    return GatewayError(errors.INVALID_PARAMETER, message)


def normalise(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the legacy aliases; the unified name wins when both are given."""
    out = dict(fields)
    for legacy, unified in ALIASES.items():
        if legacy in out:
            value = out.pop(legacy)
            out.setdefault(unified, value)
    return out


def _opt(fields: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise invalid(f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def parse_codec(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"field 'codec' must be str, got {type(value).__name__}")
    codec = CODECS.get(value.lower())
    if codec is None:
        raise bad_value(f"codec {value!r} is not supported; use pcm16, mulaw or alaw")
    return codec


def parse_rate(value: Any, allowed: tuple[int, ...]) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"field 'sample_rate_hz' must be int, got {type(value).__name__}")
    if value not in allowed:
        raise bad_value(f"sample rate {value} Hz is not supported; use one of {list(allowed)}")
    return value


# The SLNG family's generation extras and the values a model server accepts; checked here
# so a bad value is one invalid_parameter, not a refused upstream on every flush.
_EXTRA_RANGES: dict[str, tuple[type, float, float, bool]] = {
    # name: (type, low, high, low inclusive)
    "buffer_size": (int, 1, float("inf"), True),
    "max_tokens": (int, 1, float("inf"), True),
    "repetition_penalty": (float, 0, float("inf"), False),
    "temperature": (float, 0, float("inf"), True),
    "top_p": (float, 0, 1, False),
}


def _check_extras(extras: Mapping[str, Any]) -> None:
    for name, (kind, low, high, inclusive) in _EXTRA_RANGES.items():
        if name not in extras:
            continue
        value = extras[name]
        numeric = (int, float) if kind is float else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise invalid(f"field {name!r} must be a{'n integer' if kind is int else ' number'}")
        if not ((value >= low if inclusive else value > low) and value <= high):
            bound = f"{'>=' if inclusive else '>'} {low:g}" + (
                f" and <= {high:g}" if high != float("inf") else "")
            raise bad_value(f"{name} must be {bound}, got {value}")


# What a provider can be sent: JSON integers within 64 bits (what orjson writes).
_INT_RANGE = (-(2**63), 2**64 - 1)


def _check_sendable(name: str, value: Any) -> None:
    """A value passed through to the provider must be JSON the gateway can write: an
    integer beyond 64 bits (the classifier takes up to 640 digits) is refused here, as
    a value out of range, rather than failing when the upstream opens."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, int) and not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
            raise bad_value(f"field {name!r} holds an integer beyond 64 bits, which no "
                            "provider takes")


def _check_passthrough(fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        _check_sendable(name, value)


def _settings(fields: Mapping[str, Any]) -> Settings:
    extras = {k: v for k, v in fields.items() if k not in _GATEWAY_FIELDS}
    _check_passthrough(extras)
    _check_sendable("style", fields.get("style"))
    _check_extras(extras)
    return Settings(
        voice_id=_opt(fields, "voice_id", str),
        language=_opt(fields, "language", str),
        style=_opt(fields, "style", dict),
        extras=extras,
    )


@dataclass(frozen=True, slots=True)
class Init:
    settings: Settings
    context_id: str | None = None
    codec: str | None = None
    sample_rate_hz: int | None = None
    word_timestamps: bool = False


@dataclass(frozen=True, slots=True)
class InputText:
    text: str


@dataclass(frozen=True, slots=True)
class Flush:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclass(frozen=True, slots=True)
class Configure:
    settings: Settings


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Start:
    sample_rate_hz: int | None = None
    codec: str | None = None
    language: str | None = None
    context_id: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finalize:
    pass


TtsCommand = Init | InputText | Flush | Stop | Clear | Configure | Ping
SttCommand = Start | Finalize | Stop | Ping


def parse_tts(name: str, raw: Mapping[str, Any]) -> TtsCommand:
    fields = normalise(raw)
    if name == "init":
        return Init(
            settings=_settings(fields),
            context_id=_opt(fields, "context_id", str),
            codec=parse_codec(fields.get("codec")),
            sample_rate_hz=parse_rate(fields.get("sample_rate_hz"), TTS_SAMPLE_RATES),
            word_timestamps=bool(_opt(fields, "word_timestamps", bool)),
        )
    if name == "input_text":
        text = fields.get("text")
        if not isinstance(text, str):
            raise invalid("input_text needs a string field 'text'")
        return InputText(text)
    if name == "configure":
        if "codec" in fields or "sample_rate_hz" in fields:
            raise bad_value("codec and sample_rate_hz are fixed at init; open a new session")
        return Configure(_settings(fields))
    simple: dict[str, type[Flush | Stop | Clear | Ping]] = {
        "flush": Flush, "stop": Stop, "clear": Clear, "ping": Ping}
    return simple[name]()


def parse_init(raw: Mapping[str, Any]) -> Init:
    command = parse_tts("init", raw)
    assert isinstance(command, Init)
    return command


def parse_start(raw: Mapping[str, Any]) -> Start:
    command = parse_stt("start", raw)
    assert isinstance(command, Start)
    return command


def parse_stt(name: str, raw: Mapping[str, Any]) -> SttCommand:
    fields = normalise(raw)
    if name == "start":
        known = {"type", "sample_rate_hz", "codec", "language", "context_id"}
        _check_passthrough({k: v for k, v in fields.items() if k not in known})
        return Start(
            sample_rate_hz=parse_rate(fields.get("sample_rate_hz"), STT_SAMPLE_RATES),
            codec=parse_codec(fields.get("codec")),
            language=_opt(fields, "language", str),
            context_id=_opt(fields, "context_id", str),
            extras={k: v for k, v in fields.items() if k not in known},
        )
    simple: dict[str, type[Finalize | Stop | Ping]] = {
        "finalize": Finalize, "stop": Stop, "ping": Ping}
    return simple[name]()
