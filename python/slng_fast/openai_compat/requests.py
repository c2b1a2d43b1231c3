"""OpenAI's audio requests, parsed from their bodies into typed requests: the JSON of
``POST /v1/audio/speech`` and the ``multipart/form-data`` of ``POST
/v1/audio/transcriptions`` (by python-multipart). A request that cannot be served is
an `ApiError` (400, or 404 for a model this gateway does not have)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

from slng_fast.openai_compat.errors import ApiError, bad_request, model_not_found

# What ``response_format`` may be, and OpenAI's defaults.
SPEECH_FORMATS = ("mp3", "opus", "flac", "wav", "pcm")
SPEECH_FORMATS_NOT_HERE = ("aac",)  # OpenAI offers it; no wheel-installable encoder here
DEFAULT_SPEECH_FORMAT = "mp3"
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
MAX_INPUT_CHARS = 4096  # OpenAI's limit on ``input``; the key's tier may allow less
SPEED_RANGE = (0.25, 4.0)
# OpenAI's voice names: asked of an endpoint that has no such voice, they mean its
# default voice (so code written for OpenAI runs unchanged).
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                 "shimmer", "verse", "marin", "cedar")
MAX_FORM_PARTS = 32
MAX_FIELD_BYTES = 64 * 1024

# Which endpoint a model name means: (kind, name) -> the endpoint's name, or None.
Resolver = Callable[[str, str], str | None]


@dataclass(frozen=True)
class SpeechRequest:
    model: str  # as asked
    endpoint: str  # the endpoint serving it
    input: str
    voice: str | None  # None: the endpoint's default voice
    response_format: str
    speed: float


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    endpoint: str
    file: bytes
    filename: str
    language: str | None
    response_format: str
    stream: bool


def resolve_model(model: object, kind: str, resolve: Resolver) -> tuple[str, str]:
    """(the model name, the endpoint serving it) for a ``tts`` or ``stt`` request."""
    if not isinstance(model, str) or not model:
        raise bad_request("`model` is required (an endpoint of this gateway or an alias "
                          "such as tts-1 or whisper-1)", "model", "missing_required_parameter")
    endpoint = resolve(kind, model)
    if endpoint is None:
        raise model_not_found(model, "text-to-speech" if kind == "tts" else "speech-to-text")
    return model, endpoint


def parse_speech(body: bytes, resolve: Resolver, voices: Callable[[str], tuple[str, ...]]
                 ) -> SpeechRequest:
    """``voices(endpoint)``: the voices it offers (empty when it takes any name)."""
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}", None, "invalid_json") from None
    if not isinstance(fields, dict):
        raise bad_request("the body must be a JSON object", None, "invalid_json")
    model, endpoint = resolve_model(fields.get("model"), "tts", resolve)
    text = fields.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("`input` must be a non-empty string", "input",
                          "missing_required_parameter" if text is None else "invalid_value")
    if len(text) > MAX_INPUT_CHARS:
        raise bad_request(f"`input` is {len(text)} characters; at most {MAX_INPUT_CHARS}",
                          "input", "string_above_max_length")
    voice = fields.get("voice")
    if isinstance(voice, dict):  # OpenAI's custom voice object: {"id": ...}
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise bad_request("`voice` is required: one of the model's voices (GET /v1/voices) "
                          "or an OpenAI voice name", "voice", "missing_required_parameter")
    offered = voices(endpoint)
    chosen: str | None = voice
    if voice in OPENAI_VOICES and voice not in offered:
        chosen = None
    response_format = fields.get("response_format", DEFAULT_SPEECH_FORMAT)
    if response_format not in SPEECH_FORMATS:
        not_here = response_format in SPEECH_FORMATS_NOT_HERE
        raise bad_request(f"response_format {response_format!r} is not "
                          f"{'offered by this gateway' if not_here else 'known'}; use one of "
                          f"{', '.join(SPEECH_FORMATS)}", "response_format")
    speed = fields.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
            or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise bad_request(f"`speed` must be a number from {SPEED_RANGE[0]} to "
                          f"{SPEED_RANGE[1]}", "speed")
    stream_format = fields.get("stream_format", "audio")
    if stream_format != "audio":
        raise bad_request("stream_format: only 'audio' is offered by this gateway (the audio "
                          "streams as it is made)", "stream_format")
    return SpeechRequest(model, endpoint, text, chosen, str(response_format), float(speed))


@dataclass
class FormPart:
    name: str
    filename: str | None
    data: bytes


def parse_form(content_type: str | None, body: bytes) -> dict[str, FormPart]:
    """The parts of a ``multipart/form-data`` body by name (the first of each name;
    ``timestamp_granularities[]`` and the like repeat, and are not used here)."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise bad_request("the body must be multipart/form-data with a boundary", None,
                          "invalid_content_type")
    if b"--" + boundary + b"--" not in body:
        raise bad_request("the multipart body is incomplete (no closing boundary)", None,
                          "invalid_multipart")
    parts: list[FormPart] = []
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    headers: dict[bytes, bytes] = {}
    chunks: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        chunks.clear()
        if len(parts) >= MAX_FORM_PARTS:
            raise bad_request(f"more than {MAX_FORM_PARTS} form fields", None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(header_name).lower()] = b"".join(header_value)
        header_name.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        parts.append(FormPart(name, filename.decode("utf-8", "replace")
                              if filename is not None else None, b"".join(chunks)))

    callbacks: Any = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                      "on_header_value": on_header_value, "on_header_end": on_header_end,
                      "on_part_data": on_part_data, "on_part_end": on_part_end}
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and kin
        raise bad_request(f"malformed multipart body: {exc}", None, "invalid_multipart") \
            from None
    out: dict[str, FormPart] = {}
    for part in parts:
        out.setdefault(part.name, part)
    return out


def _text(form: Mapping[str, FormPart], name: str) -> str | None:
    part = form.get(name)
    if part is None:
        return None
    if len(part.data) > MAX_FIELD_BYTES:
        raise bad_request(f"field `{name}` is too long", name)
    return part.data.decode("utf-8", "replace").strip()


def parse_transcription(content_type: str | None, body: bytes, resolve: Resolver
                        ) -> TranscriptionRequest:
    form = parse_form(content_type, body)
    model, endpoint = resolve_model(_text(form, "model"), "stt", resolve)
    file = form.get("file")
    if file is None or file.filename is None:
        raise bad_request("`file` is required: the audio, as a file field", "file",
                          "missing_required_parameter")
    if not file.data:
        raise bad_request("`file` is empty", "file")
    response_format = _text(form, "response_format") or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise bad_request(f"response_format {response_format!r} is not offered by this "
                          f"gateway; use one of {', '.join(TRANSCRIPTION_FORMATS)}",
                          "response_format")
    stream = (_text(form, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise bad_request("`stream` must be true or false", "stream")
    language = _text(form, "language") or None
    return TranscriptionRequest(model, endpoint, file.data, file.filename, language,
                                response_format, stream == "true")


def model_list(endpoints: list[tuple[str, str, bool]], aliases: Mapping[str, str]
               ) -> dict[str, Any]:
    """``GET /v1/models``: each endpoint (name, kind, available) and each alias, in
    OpenAI's list shape (plus what the gateway knows: kind, availability, target)."""
    kinds = {name: (kind, available) for name, kind, available in endpoints}
    data: list[dict[str, Any]] = []
    for name, kind, available in endpoints:
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "slng-fast",
                     "kind": kind, "available": available})
    for alias, target in sorted(aliases.items()):
        if target in kinds and alias not in kinds:
            kind, available = kinds[target]
            data.append({"id": alias, "object": "model", "created": 0,
                         "owned_by": "slng-fast", "kind": kind, "available": available,
                         "alias_of": target})
    return {"object": "list", "data": data}
