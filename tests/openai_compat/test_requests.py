"""OpenAI's audio requests parsed without sockets: the speech JSON, the transcription
form (a real multipart body, as httpx writes it), the refusals, the model list."""

from __future__ import annotations

import httpx
import orjson
import pytest

from slng_fast.openai_compat.errors import ApiError, from_event
from slng_fast.openai_compat.requests import (
    MAX_INPUT_CHARS,
    model_list,
    parse_form,
    parse_speech,
    parse_transcription,
)

ENDPOINTS = {("tts", "espeak"), ("tts", "piper"), ("stt", "pocketsphinx")}
ALIASES = {"tts-1": "piper", "whisper-1": "pocketsphinx"}


def resolve(kind: str, model: str) -> str | None:
    name = model if (kind, model) in ENDPOINTS else ALIASES.get(model)
    return name if (kind, name) in ENDPOINTS else None


def voices(endpoint: str) -> tuple[str, ...]:
    return ("en_US-joe-medium",) if endpoint == "piper" else ()


def speech(**fields: object) -> bytes:
    return orjson.dumps({"model": "tts-1", "input": "Hello.", "voice": "alloy", **fields})


def refusal(call: object, *args: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_speech_defaults_and_aliases():
    request = parse_speech(speech(), resolve, voices)
    assert (request.model, request.endpoint) == ("tts-1", "piper")
    assert request.voice is None  # an OpenAI voice the endpoint lacks: its default voice
    assert (request.response_format, request.speed) == ("mp3", 1.0)
    own = parse_speech(speech(model="piper", voice="en_US-joe-medium", response_format="pcm",
                              speed=1.5), resolve, voices)
    assert (own.endpoint, own.voice, own.response_format, own.speed) == (
        "piper", "en_US-joe-medium", "pcm", 1.5)
    assert parse_speech(speech(model="espeak", voice="en-gb"), resolve, voices).voice == "en-gb"


@pytest.mark.parametrize(("body", "status", "param"), [
    (b"not json", 400, None),
    (b"[1]", 400, None),
    (speech(model=None), 400, "model"),
    (speech(model="whisper-1"), 404, "model"),  # an STT model asked for speech
    (speech(model="gpt-9"), 404, "model"),
    (speech(input=""), 400, "input"),
    (speech(input="x" * (MAX_INPUT_CHARS + 1)), 400, "input"),
    (speech(voice=None), 400, "voice"),
    (speech(response_format="aac"), 400, "response_format"),
    (speech(response_format="ogg"), 400, "response_format"),
    (speech(speed=4.5), 400, "speed"),
    (speech(speed="fast"), 400, "speed"),
    (speech(stream_format="sse"), 400, "stream_format"),
])
def test_speech_refusals(body, status, param):
    err = refusal(parse_speech, body, resolve, voices)
    assert (err.status, err.param) == (status, param)
    shape = orjson.loads(err.body())["error"]
    assert set(shape) == {"message", "type", "param", "code"} and shape["message"]


def form(**fields: object) -> tuple[str, bytes]:
    files = {"file": ("a.wav", b"RIFF....")} if "file" not in fields else fields.pop("file")
    request = httpx.Request("POST", "http://x/", data=fields, files=files)  # type: ignore[arg-type]
    return request.headers["content-type"], request.read()


def test_transcription_form():
    content_type, body = form(model="whisper-1", language="en", response_format="verbose_json",
                              stream="true")
    request = parse_transcription(content_type, body, resolve)
    assert (request.endpoint, request.language, request.response_format, request.stream) == (
        "pocketsphinx", "en", "verbose_json", True)
    assert (request.filename, request.file) == ("a.wav", b"RIFF....")
    content_type, body = form(model="pocketsphinx")
    request = parse_transcription(content_type, body, resolve)
    assert (request.response_format, request.stream, request.language) == ("json", False, None)


@pytest.mark.parametrize(("fields", "status", "param"), [
    ({"model": "tts-1"}, 404, "model"),
    ({}, 400, "model"),
    ({"model": "whisper-1", "file": {"audio": ("a.wav", b"RIFF")}}, 400, "file"),
    ({"model": "whisper-1", "file": {"file": ("a.wav", b"")}}, 400, "file"),
    ({"model": "whisper-1", "response_format": "diarized_json"}, 400, "response_format"),
    ({"model": "whisper-1", "stream": "maybe"}, 400, "stream"),
])
def test_transcription_refusals(fields, status, param):
    content_type, body = form(**fields)
    err = refusal(parse_transcription, content_type, body, resolve)
    assert (err.status, err.param) == (status, param)


def test_a_body_that_is_not_multipart_is_refused():
    assert refusal(parse_form, "application/json", b"{}").status == 400
    assert refusal(parse_form, "multipart/form-data; boundary=x", b"--x\r\ngarbage").status == 400


@pytest.mark.parametrize(("code", "status"), [
    ("auth_failed", 401), ("too_many_connections", 429), ("rate_limited", 429),
    ("invalid_parameter", 400), ("text_too_long", 400), ("provider_unavailable", 503),
    ("provider_error", 502), ("internal_error", 500), ("message_too_large", 413),
])
def test_session_errors_map_to_statuses(code, status):
    err = from_event({"type": "error", "code": code, "message": "m", "retry_after_ms": 2500})
    assert err.status == status
    retry_after = dict(err.headers()).get("retry-after")
    assert retry_after == {429: "3", 503: "1"}.get(status)


def test_model_list_has_endpoints_then_aliases_of_known_endpoints():
    listed = model_list([("espeak", "tts", True), ("pocketsphinx", "stt", False)],
                        {"tts-1": "espeak", "whisper-1": "pocketsphinx", "gone": "nothing"})
    assert listed["object"] == "list"
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["espeak", "pocketsphinx", "tts-1", "whisper-1"]
    assert listed["data"][3] == {"id": "whisper-1", "object": "model", "created": 0,
                                 "owned_by": "slng-fast", "kind": "stt", "available": False,
                                 "alias_of": "pocketsphinx"}
