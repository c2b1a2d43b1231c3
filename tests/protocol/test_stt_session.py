"""Golden transcripts of the unified STT session over the unified pass-through dialect."""

from __future__ import annotations

import orjson
import pytest
from helpers import FREE, PRO, client_events, close_code, cmd, opened, types, upstream_frames

from slng_fast.protocol.stt import SttSession
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.unified import UnifiedSttDialect

SPHINX = ENDPOINTS["pocketsphinx"]


def make(tier=PRO, defaults=None):
    return SttSession(endpoint=SPHINX, dialect=UnifiedSttDialect(SPHINX, "ws://engine.invalid/"),
                      tier=tier, now=0.0, defaults=defaults)


def test_start_answers_ready_and_opens_upstream_at_the_model_rate():
    s = make()
    out = s.receive_text(cmd(type="start", sample_rate=8000, encoding="mulaw", language="en"), 0.0)
    (ready,) = client_events(out)
    assert ready == {"type": "ready", "model_id": "pocketsphinx", "sample_rate": 8000,
                     "encoding": "mulaw", "context_id": s.context_id}
    assert opened(out)
    start = orjson.loads(upstream_frames(out)[0])
    assert start["type"] == "start" and start["sample_rate"] == 16000 and start["encoding"] == "pcm16"


def test_audio_is_converted_to_16k_pcm16_for_the_model():
    s = make()
    s.receive_text(cmd(type="start", sample_rate_hz=8000, codec="mulaw"), 0.0)
    sent = b"".join(f for f in upstream_frames(s.receive_binary(b"\xff" * 1600, 0.1))
                    if isinstance(f, bytes))
    # 200 ms at 8 kHz mu-law -> about 200 ms at 16 kHz PCM16, less the filter's look-ahead
    assert 5600 <= len(sent) <= 6400 and len(sent) % 2 == 0


def test_binary_before_start_implies_16k_pcm16():
    s = make()
    out = s.receive_binary(b"\x00\x00" * 320, 0.0)
    assert types(out) == ["ready"] and client_events(out)[0]["sample_rate"] == 16000


def test_transcripts_pass_through_and_finalize_gets_one_final_transcript():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    s.receive_binary(b"\x00\x00" * 16000, 0.5)
    e = s.upstream_epoch
    out = s.receive_upstream(e, cmd(type="transcript", text="hello", is_final=False,
                                    confidence=0.5, timestamp=1), 1.0)
    assert client_events(out)[0]["text"] == "hello" and client_events(out)[0]["is_final"] is False
    s.receive_upstream(e, cmd(type="transcript", text="hello world", is_final=True), 1.1)
    assert upstream_frames(s.receive_text(cmd(type="finalize"), 1.2)) == ['{"type":"finalize"}']
    (final,) = client_events(s.receive_upstream(
        e, cmd(type="final_transcript", text="hello world", audio_duration_seconds=1.0), 1.3))
    assert final["type"] == "final_transcript" and final["text"] == "hello world"
    assert final["audio_duration_seconds"] == pytest.approx(1.0)
    assert final["context_id"] == s.context_id
    # a second finalize holds only what came after the first
    s.receive_binary(b"\x00\x00" * 8000, 1.4)
    s.receive_text(cmd(type="finalize"), 1.5)
    (again,) = client_events(s.receive_upstream(e, cmd(type="final_transcript", text=""), 1.6))
    assert again["text"] == "" and again["audio_duration_seconds"] == pytest.approx(0.5)


@pytest.mark.parametrize("frame, code", [
    (cmd(type="finalize"), "invalid_message"),
    ("hello", None),  # first frame plain text: native mode, no unified error
])
def test_text_before_start(frame, code):
    s = make()
    out = s.receive_text(frame, 0.0)
    if code is None:
        assert s.mode == "native" and client_events(out) == []
    else:
        (err,) = client_events(out)
        assert err["code"] == code and not s.ended


def test_second_start_is_already_initialized():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    (err,) = client_events(s.receive_text(cmd(type="start"), 0.1))
    assert err["code"] == "already_initialized"


def test_bad_start_values():
    s = make()
    (err,) = client_events(s.receive_text(cmd(type="start", sample_rate=12345), 0.0))
    assert err["code"] == "invalid_parameter"
    (err,) = client_events(s.receive_text(cmd(type="start", language="xx"), 0.0))
    assert err["code"] == "invalid_parameter"


def test_oversize_audio_frame_closes_4002():
    s = make(tier=FREE)
    s.receive_text(cmd(type="start"), 0.0)
    out = s.receive_binary(b"\x00" * (FREE.max_audio_chunk_bytes + 2), 0.1)
    assert types(out) == ["error", "session_ended"] and close_code(out) == 4002


def test_upstream_error_is_passed_on():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    out = s.receive_upstream(s.upstream_epoch, cmd(type="error", code="invalid_parameter",
                                                   message="bad", retryable=False), 0.1)
    (err,) = client_events(out)
    assert err["code"] == "provider_error" and err["message"] == "bad"


def test_a_provider_quiet_after_finalize_ends_the_session_at_the_deadline():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    s.receive_binary(b"\x00\x00" * 16000, 0.5)
    assert s.deadline() is None  # streaming audio: nothing waits on the provider yet
    s.receive_text(cmd(type="finalize"), 1.0)
    assert s.deadline() is None  # still connecting: the connect budget bounds that wait
    s.upstream_connected(s.upstream_epoch, 0.2)
    assert s.deadline() == pytest.approx(1.0 + s.provider_timeout_s)
    e = s.upstream_epoch
    s.receive_upstream(e, cmd(type="transcript", text="hel", is_final=False), 4.0)
    assert s.deadline() == pytest.approx(4.0 + s.provider_timeout_s)
    assert s.on_deadline(5.0) == []
    out = s.on_deadline(4.0 + s.provider_timeout_s)
    events = client_events(out)
    assert [e["type"] for e in events] == ["error", "session_ended"]
    assert events[0]["code"] == "provider_unavailable" and close_code(out) == 1013


def test_a_final_clears_the_deadline():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    s.receive_text(cmd(type="finalize"), 1.0)
    s.receive_upstream(s.upstream_epoch, cmd(type="final_transcript", text=""), 2.0)
    assert s.deadline() is None


def test_draining_waits_for_a_pending_finalize():
    s = make()
    s.receive_text(cmd(type="start"), 0.0)
    s.receive_text(cmd(type="finalize"), 1.0)
    assert s.drain(1.5) == []
    out = s.receive_upstream(s.upstream_epoch, cmd(type="final_transcript", text="hi"), 2.0)
    assert types(out) == ["final_transcript", "session_ended"] and close_code(out) == 1001


@pytest.mark.parametrize("frame", [
    '{"type":"start","language":"\\udfff"}',
    '{"language":' + "[" * 70 + "]" * 70 + ',"type":"finalize"}',
    '{"type":"start","sample_rate":' + "1" * 700 + "}",
])
def test_a_refused_first_command_keeps_the_session_unified(frame):
    s = make()
    out = s.receive_text(frame, 0.0)
    (err,) = client_events(out)
    assert err["code"] == "invalid_message" and s.mode == "unified"
    assert not opened(out) and close_code(out) is None and not s.ended
    assert types(s.receive_text(cmd(type="start"), 1.0)) == ["ready"]


def test_an_integer_beyond_64_bits_for_the_provider_is_invalid_parameter():
    s = make()
    out = s.receive_text('{"type":"start","beam_size":1' + "0" * 100 + "}", 0.0)
    (err,) = client_events(out)
    assert err["code"] == "invalid_parameter" and close_code(out) is None and not s.opened
    assert types(s.receive_text(cmd(type="start"), 1.0)) == ["ready"]
