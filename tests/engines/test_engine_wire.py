"""The engines' wire formats, without sockets."""

from __future__ import annotations

import orjson
import pytest

from slng_fast import errors
from slng_fast.engines import wire
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands, events


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("Hello ", wire.TextChunk("Hello ")),
        ("__END__", wire.EndOfInput()),
        (" __END__\n", wire.EndOfInput()),
        ('{"type":"control","action":"flush"}', wire.Control("flush")),
        ('{"type":"control","action":"stop"}', wire.Control("stop")),
        ('{"voice":"en-us"}', wire.TtsSettingsFrame({"voice": "en-us"})),
        ('{"type":"settings","voice":"de"}', wire.TtsSettingsFrame({"type": "settings", "voice": "de"})),
        ("{not json", wire.TextChunk("{not json")),
        ("[1, 2]", wire.TextChunk("[1, 2]")),
        ('"quoted"', wire.TextChunk('"quoted"')),
        ("", wire.TextChunk("")),
    ],
)
def test_tts_frames(frame: str, expected: object) -> None:
    assert wire.parse_tts_frame(frame) == expected


def test_tts_bad_frames() -> None:
    assert isinstance(wire.parse_tts_frame('{"type":"control"}'), wire.InvalidFrame)
    assert isinstance(wire.parse_tts_frame('{"type":"Speak","text":"x"}'), wire.InvalidFrame)


def test_tts_settings() -> None:
    s = wire.parse_tts_settings(
        {
            "voice": "en-us+f3",
            "language": "en",
            "buffer_size": 10,
            "max_tokens": 2000,
            "repetition_penalty": 1.1,
            "temperature": 0.6,
            "top_p": 0.9,
        }
    )
    assert (s.voice, s.language, s.rate) == ("en-us+f3", "en", None)
    assert s.ignored == ("buffer_size", "max_tokens", "repetition_penalty", "temperature", "top_p")
    assert wire.parse_tts_settings({"voice_id": "de"}).voice == "de"
    assert wire.parse_tts_settings({"speed": 2}).rate == 350
    assert wire.parse_tts_settings({"rate": 120, "speed": 2}).rate == 120
    for bad in ({"voice": 3}, {"language": ["en"]}, {"rate": "fast"}, {"rate": True}, {"speed": 0}):
        with pytest.raises(wire.SettingsError):
            wire.parse_tts_settings(bad)


def test_tts_events() -> None:
    assert wire.tts_flushed() == {"type": "flushed"}
    assert wire.tts_flushed(interrupted=True) == {"type": "flushed", "interrupted": True}
    ready = wire.tts_ready(
        22050,
        voices=[{"id": "en-us"}],
        languages=["en"],
        variants=[],
        default_voice="en-us",
        engine="espeak-ng",
        version="1",
    )
    assert ready["type"] == "ready" and ready["sample_rate"] == 22050
    assert orjson.loads(wire.dumps(ready)) == ready


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("hello", "invalid_message"),
        ("[]", "invalid_message"),
        ('{"text":"x"}', "invalid_message"),
        ('{"type":"init"}', "unknown_command"),
        ('{"type":"control","action":"flush"}', "unknown_command"),
    ],
)
def test_stt_bad_text(frame: str, code: str) -> None:
    with pytest.raises(GatewayError) as refused:
        wire.parse_stt_text(frame)
    assert refused.value.code == code


def test_stt_commands_are_the_gateways_own() -> None:
    expected = {"start": commands.Start, "finalize": commands.Finalize,
                "stop": commands.Stop, "ping": commands.Ping}
    for kind, cls in expected.items():
        assert isinstance(wire.parse_stt_text(orjson.dumps({"type": kind}).decode()), cls)


def start(body: dict[str, object]) -> commands.Start:
    command = wire.parse_stt_text(orjson.dumps({"type": "start", **body}).decode())
    assert isinstance(command, commands.Start)
    return command


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sample_rate": 16000, "encoding": "pcm16", "language": "en"},
        {"sample_rate_hz": 16000, "codec": "PCM16", "language": "en-US"},
        {"language": "en_GB", "context_id": "abc"},
    ],
)
def test_stt_start_accepted(body: dict[str, object]) -> None:
    wire.check_start(start(body))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"sample_rate": 8000}, "invalid_parameter"),
        ({"sample_rate_hz": 24000}, "invalid_parameter"),
        ({"encoding": "mulaw"}, "invalid_parameter"),
        ({"codec": "alaw"}, "invalid_parameter"),
        ({"language": "de"}, "invalid_parameter"),
        ({"sample_rate": "fast"}, "invalid_message"),
        ({"language": 5}, "invalid_message"),
        ({"context_id": 5}, "invalid_message"),
    ],
)
def test_stt_start_refused(body: dict[str, object], code: str) -> None:
    with pytest.raises(GatewayError) as refused:
        wire.check_start(start(body))
    assert refused.value.code == code


def test_stt_events() -> None:
    ready = orjson.loads(wire.stt_ready(model_id="m", context_id="c"))
    assert {k: ready[k] for k in ("model_id", "sample_rate", "encoding", "context_id")} == {
        "model_id": "m",
        "sample_rate": 16000,
        "encoding": "pcm16",
        "context_id": "c",
    }
    t = wire.stt_transcript(
        text="hi", is_final=True, confidence=0.51234, start=1.0, end=2.0, context_id="c", now=5.0
    )
    assert orjson.loads(t) == {
        "type": "transcript",
        "text": "hi",
        "is_final": True,
        "confidence": 0.5123,
        "timestamp": 5.0,
        "start": 1.0,
        "end": 2.0,
        "context_id": "c",
    }
    ended = orjson.loads(wire.stt_session_ended(
        reason="client_closed", audio_seconds=1.5, duration_seconds=2.0, messages=3, context_id="c"
    ))
    assert ended["usage"] == {"audio_ms": 1500, "messages": 3, "duration_ms": 2000}


def test_events_before_a_session_has_an_id_leave_it_out() -> None:
    err = orjson.loads(events.error(None, GatewayError(errors.INVALID_PARAMETER, "no")))
    assert err == {"type": "error", "code": "invalid_parameter", "message": "no", "retryable": False}
    assert orjson.loads(events.pong("c", 1.0)) == {"type": "pong", "timestamp": 1.0, "context_id": "c"}
