"""Golden transcripts of the unified TTS session over the Cartesia dialect: client frames
and Cartesia frames in, actions out. No sockets, no clock."""

from __future__ import annotations

import base64
import math
import struct

import orjson
import pytest

from protocol.helpers import (
    PRO,
    audio_of,
    client_events,
    closed_upstreams,
    cmd,
    opened,
    types,
    upstream_frames,
)
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.cartesia import CARTESIA_VERSION, CartesiaDialect
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.vocabulary import Audio, UpstreamError, UtteranceDone, Words

CARTESIA = ENDPOINTS["cartesia"]
BASE = "wss://api.cartesia.ai"


def make(defaults=None, url=BASE, key="sk-provider"):
    dialect = CartesiaDialect(CARTESIA, url, key, context_prefix="t")
    return TtsSession(endpoint=CARTESIA, dialect=dialect, tier=PRO, now=0.0, defaults=defaults)


def tone(ms: int, rate: int = 24000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate))
                                    for i in range(n)))


def sent(actions) -> list[dict]:
    return [orjson.loads(f) for f in upstream_frames(actions)]


def chunk(context_id: str, pcm: bytes) -> str:
    return orjson.dumps({"type": "chunk", "context_id": context_id, "status_code": 206,
                         "done": False, "step_time": 12.5,
                         "data": base64.b64encode(pcm).decode()}).decode()


def done(context_id: str) -> str:
    return orjson.dumps({"type": "done", "context_id": context_id, "status_code": 206,
                         "done": True}).decode()


def up(s: TtsSession, *frames):
    out = []
    for f in frames:
        out += s.receive_upstream(s.upstream_epoch, f, 1.0)
    return out


def speak(s: TtsSession, text: str):
    return s.receive_text(cmd(type="input_text", text=text), 0.1) + \
        s.receive_text(cmd(type="flush"), 0.2)


# -- opening -----------------------------------------------------------------------------

def test_ready_declares_native_stop_and_configure_and_word_timestamps():
    s = make()
    out = s.receive_text(cmd(type="init", context_id="client-ctx"), 0.0)
    (ready,) = client_events(out)
    caps = ready["capabilities"]
    assert caps["supports_stop"] and caps["supports_clear"] and caps["supports_configure"]
    assert caps["configure_reconnects"] is False and caps["word_timestamps"] is True
    assert s.dialect.stop_by_reconnect is False
    (request,) = opened(out)
    assert request.request.url == "wss://api.cartesia.ai/tts/websocket"
    headers = dict(request.request.headers)
    assert headers["Cartesia-Version"] == CARTESIA_VERSION
    assert headers["X-API-Key"] == "sk-provider"
    assert upstream_frames(out) == []  # Cartesia needs no first message


def test_url_that_already_names_the_path_is_not_doubled():
    dialect = CartesiaDialect(CARTESIA, "ws://127.0.0.1:9/tts/websocket/", None)
    request = dialect.request(dialect._settings)
    assert request.url == "ws://127.0.0.1:9/tts/websocket"
    assert dict(request.headers) == {"Cartesia-Version": CARTESIA_VERSION}


# -- requests ----------------------------------------------------------------------------

def test_every_request_repeats_all_settings_in_one_context_per_utterance():
    s = make()
    s.receive_text(cmd(type="init", voice_id="voice-a", language="en-US", model_id="sonic-2",
                       sample_rate_hz=16000, style={"speed": 1.2, "emotion": "positivity"},
                       generation_config={"volume": 0.9}, max_buffer_delay_ms=500), 0.0)
    first = sent(s.receive_text(cmd(type="input_text", text="Hello "), 0.1))
    second = sent(s.receive_text(cmd(type="input_text", text="world."), 0.1))
    end = sent(s.receive_text(cmd(type="flush"), 0.2))
    frames = first + second + end
    assert [f["transcript"] for f in frames] == ["Hello ", "world.", ""]
    assert [f["continue"] for f in frames] == [True, True, False]
    assert {f["context_id"] for f in frames} == {"t-1"}
    for f in frames:
        assert f["model_id"] == "sonic-2"
        assert f["voice"] == {"mode": "id", "id": "voice-a"}
        assert f["output_format"] == {"container": "raw", "encoding": "pcm_s16le",
                                      "sample_rate": 16000}
        assert f["language"] == "en"
        assert f["generation_config"] == {"speed": 1.2, "emotion": "positivity", "volume": 0.9}
        assert f["max_buffer_delay_ms"] == 500
        assert f["add_timestamps"] is True
    nxt = sent(speak(s, "Again."))
    assert [f["context_id"] for f in nxt] == ["t-2", "t-2"]  # a new context per utterance


def test_defaults_and_experimental_controls():
    s = make()
    s.receive_text(cmd(type="init", style={"__experimental_controls": {"speed": "fast"}}), 0.0)
    (text, _end) = sent(speak(s, "Hi."))
    assert text["voice"] == {"mode": "id", "id": CARTESIA.default_voice,
                             "__experimental_controls": {"speed": "fast"}}
    assert text["model_id"] == "sonic-3"
    assert text["output_format"]["sample_rate"] == 24000
    assert "language" not in text and "generation_config" not in text


def test_client_context_id_is_the_gateway_s_not_cartesia_s():
    s = make()
    s.receive_text(cmd(type="init", context_id="mine"), 0.0)
    (text, end) = sent(speak(s, "Hi."))
    assert text["context_id"] == end["context_id"] == "t-1"
    events = client_events(up(s, chunk("t-1", tone(20)), done("t-1")))
    assert {e["context_id"] for e in events} == {"mine"}


def test_flush_with_nothing_sent_is_answered_at_once():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    out = s.receive_text(cmd(type="flush"), 0.0)
    assert types(out) == ["audio_end"] and upstream_frames(out) == []


# -- audio and utterances ------------------------------------------------------------------

def test_chunks_become_audio_and_done_ends_the_utterance():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "Hello world.")
    pcm = tone(100)
    out = up(s, chunk("t-1", pcm[:2000]), chunk("t-1", pcm[2000:]),
             '{"type":"flush_done","context_id":"t-1","flush_id":1,"flush_done":true}')
    assert "audio_end" not in types(out)
    out += up(s, done("t-1"))
    events = client_events(out)
    assert events[-1]["type"] == "audio_end"
    assert events[-1]["id"] == 1 and events[-1]["interrupted"] is False
    assert audio_of(out) == pcm
    assert events[-1]["total_duration_ms"] == pytest.approx(100, abs=0.05)
    assert closed_upstreams(out) == []


def test_contexts_generated_concurrently_come_out_in_utterance_order():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "One.")
    speak(s, "Two.")
    a, b = tone(40), tone(60)[::-1]
    # Cartesia interleaves the two contexts; the client must hear one, then the other.
    out = up(s, chunk("t-2", b[:1000]), chunk("t-1", a[:1000]), done("t-2"),
             chunk("t-1", a[1000:]))
    assert types(out).count("audio_end") == 0
    assert audio_of(out) == a
    out2 = up(s, done("t-1"))
    events = client_events(out2)
    ends = [e for e in events if e["type"] == "audio_end"]
    assert [e["id"] for e in ends] == [1, 2]
    # utterance 2's audio is released after utterance 1 ends, before its own end
    assert types(out2) == ["audio_end", "audio_chunk", "audio_end"]
    assert audio_of(out2) == b[:1000]


def test_audio_before_the_flush_is_held_until_the_utterance_is_flushed():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="Early speech. "), 0.1)
    pcm = tone(30)
    assert up(s, chunk("t-1", pcm)) == []  # no utterance yet
    s.receive_text(cmd(type="flush"), 0.2)
    out = up(s, done("t-1"))
    assert audio_of(out) == pcm and types(out)[-1] == "audio_end"


def test_audio_at_the_client_rate_when_cartesia_offers_it_else_resampled():
    s = make()
    s.receive_text(cmd(type="init", sample_rate_hz=32000), 0.0)
    (text, _end) = sent(speak(s, "Hi."))
    assert text["output_format"]["sample_rate"] == 24000  # 32 kHz is not a Cartesia rate
    out = up(s, chunk("t-1", tone(100)), done("t-1"))
    assert abs(len(audio_of(out)) - 6400) <= 2  # 100 ms at 32 kHz

    d = CartesiaDialect(CARTESIA, BASE, "k", context_prefix="x")
    d.prefer_output(8000)
    d.input_text("Hi.")
    d.flush()
    (audio,) = [e for e in d.receive(chunk("x-1", tone(10, 8000))) if isinstance(e, Audio)]
    assert audio.sample_rate == 8000 and audio.sample_format == "pcm16"


# -- stop and clear ------------------------------------------------------------------------

def test_stop_cancels_contexts_in_flight_and_drops_their_late_frames():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "First sentence.")
    speak(s, "Second sentence.")
    up(s, chunk("t-1", tone(20)))
    out = s.receive_text(cmd(type="stop"), 0.3)
    assert sorted(sent(out), key=lambda f: f["context_id"]) == [
        {"context_id": "t-1", "cancel": True}, {"context_id": "t-2", "cancel": True}]
    ends = [e for e in client_events(out) if e["type"] == "audio_end"]
    assert [(e["id"], e["interrupted"]) for e in ends] == [(1, True), (2, True)]
    assert closed_upstreams(out) == [] and opened(out) == []  # no reconnect
    late = up(s, chunk("t-1", tone(20)), chunk("t-2", tone(20)), done("t-1"), done("t-2"))
    assert client_events(late) == []
    # the session goes on, on the same socket, with a new context
    third = speak(s, "Third.")
    (text, end) = sent(third)
    assert text["context_id"] == "t-3" and opened(third) == []
    out = up(s, chunk("t-3", tone(20)), done("t-3"))
    assert types(out)[-1] == "audio_end" and client_events(out)[-1]["id"] == 3
    assert audio_of(out) == tone(20)


def test_stop_with_unflushed_text_cancels_it_with_the_next_frames():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="never flushed"), 0.1)
    out = s.receive_text(cmd(type="stop"), 0.2)
    assert [(e["type"], e["interrupted"]) for e in client_events(out)] == [("audio_end", True)]
    assert up(s, chunk("t-1", tone(20))) == []
    nxt = sent(s.receive_text(cmd(type="input_text", text="new"), 0.3))
    assert nxt[0] == {"context_id": "t-1", "cancel": True}
    assert nxt[1]["context_id"] == "t-2" and nxt[1]["transcript"] == "new"


def test_clear_drops_the_unflushed_context():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="drop me"), 0.1)
    assert s.receive_text(cmd(type="clear"), 0.2) == []
    assert up(s, chunk("t-1", tone(20))) == []
    frames = sent(speak(s, "keep me"))
    assert frames[0] == {"context_id": "t-1", "cancel": True}
    assert [f["context_id"] for f in frames[1:]] == ["t-2", "t-2"]
    out = up(s, chunk("t-2", tone(20)), done("t-2"))
    assert audio_of(out) == tone(20) and client_events(out)[-1]["id"] == 1


# -- configure -----------------------------------------------------------------------------

def test_configure_sends_nothing_and_the_next_context_uses_the_new_voice():
    s = make()
    s.receive_text(cmd(type="init", voice_id="voice-a"), 0.0)
    s.receive_text(cmd(type="input_text", text="old voice "), 0.1)
    out = s.receive_text(cmd(type="configure", voice_id="voice-b", language="fr",
                             model_id="sonic-2"), 0.2)
    assert out == []  # no frames, no reconnect
    # the utterance already started keeps its voice (a context is one voice)
    rest = sent(s.receive_text(cmd(type="input_text", text="still."), 0.3))
    rest += sent(s.receive_text(cmd(type="flush"), 0.3))
    assert {f["voice"]["id"] for f in rest} == {"voice-a"}
    nxt = sent(speak(s, "Bonjour."))
    assert {f["context_id"] for f in nxt} == {"t-2"}
    for f in nxt:
        assert f["voice"]["id"] == "voice-b" and f["language"] == "fr"
        assert f["model_id"] == "sonic-2"


# -- timestamps ----------------------------------------------------------------------------

def test_word_timestamps_in_milliseconds_when_the_client_asked():
    s = make()
    s.receive_text(cmd(type="init", word_timestamps=True), 0.0)
    speak(s, "Hello world.")
    ts = orjson.dumps({"type": "timestamps", "context_id": "t-1", "status_code": 206,
                       "done": False, "word_timestamps": {
                           "words": ["Hello", "world."], "start": [0.0, 0.42],
                           "end": [0.4, 0.9]}}).decode()
    out = up(s, chunk("t-1", tone(20)), ts, done("t-1"))
    (words,) = [e for e in client_events(out) if e["type"] == "word_timestamps"]
    assert words["words"] == ["Hello", "world."]
    assert words["start_ms"] == [0.0, 420.0] and words["end_ms"] == [400.0, 900.0]
    assert types(out)[-1] == "audio_end"

    quiet = make()
    quiet.receive_text(cmd(type="init"), 0.0)
    speak(quiet, "Hello world.")
    assert "word_timestamps" not in types(up(quiet, ts, done("t-1")))


def test_timestamps_come_out_as_words_events():
    d = CartesiaDialect(CARTESIA, BASE, None, context_prefix="x")
    d.input_text("a b")
    d.flush()
    events = d.receive(orjson.dumps({"type": "timestamps", "context_id": "x-1",
                                     "word_timestamps": {"words": ["a", "b"],
                                                         "start": [0.1, 0.25],
                                                         "end": [0.2, 0.5]}}).decode())
    assert events == [Words(("a", "b"), (100.0, 250.0), (200.0, 500.0))]
    assert d.receive(done("x-1")) == [UtteranceDone()]


# -- errors --------------------------------------------------------------------------------

def error(context_id, message, status=400):
    return orjson.dumps({"type": "error", "context_id": context_id, "status_code": status,
                         "done": True, "title": "Invalid request",
                         "message": message}).decode()


def test_context_error_is_a_non_fatal_provider_error_and_ends_that_utterance():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "Bad voice.")
    out = up(s, error("t-1", "voice not found"))
    err, end = client_events(out)
    assert err["type"] == "error" and err["code"] == "provider_error"
    assert "voice not found" in err["message"] and err["retryable"] is False
    assert end["type"] == "audio_end" and end["id"] == 1
    assert closed_upstreams(out) == []
    assert s.ended is None
    (text, _end) = sent(speak(s, "Next."))
    out = up(s, chunk("t-2", tone(20)), done("t-2"))
    assert types(out)[-1] == "audio_end"


@pytest.mark.parametrize("message, status, retryable", [
    ("Rate limit exceeded", 429, True),
    ("The service is overloaded, try again later", 503, True),
    ("Request timeout", 400, True),
    ("invalid sample rate", 400, False),
    ("voice not found", 404, False),
])
def test_error_mapping(message, status, retryable):
    d = CartesiaDialect(CARTESIA, BASE, None, context_prefix="x")
    d.input_text("hi")
    d.flush()
    (err, end) = d.receive(error("x-1", message, status))
    assert isinstance(err, UpstreamError) and isinstance(end, UtteranceDone)
    assert err.retryable is retryable and err.fatal is False and message in err.message


def test_error_for_the_unflushed_context_and_without_a_context():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.1)
    out = up(s, error("t-1", "transcript is invalid"))
    assert types(out) == ["error"]
    assert types(s.receive_text(cmd(type="flush"), 0.2)) == ["audio_end"]
    out = up(s, orjson.dumps({"type": "error", "message": "bad JSON"}).decode())
    assert types(out) == ["error"] and s.ended is None


# -- the upstream closing while idle ------------------------------------------------------

def test_upstream_closed_between_utterances_reopens_unseen():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "One.")
    up(s, chunk("t-1", tone(20)), done("t-1"))
    assert s.upstream_closed(s.upstream_epoch, 2.0) == []
    out = speak(s, "Two.")
    assert len(opened(out)) == 1
    assert [f["context_id"] for f in sent(out)] == ["t-2", "t-2"]
    done_out = up(s, chunk("t-2", tone(20)), done("t-2"))
    assert types(done_out)[-1] == "audio_end" and "error" not in types(done_out)


def test_upstream_closed_with_unflushed_text_resends_it_on_the_new_socket():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="Hello "), 0.1)
    assert s.upstream_closed(s.upstream_epoch, 1.0) == []  # nothing pending yet
    out = s.receive_text(cmd(type="input_text", text="again. "), 0.2)
    assert len(opened(out)) == 1
    assert [(f["context_id"], f["transcript"]) for f in sent(out)] == [
        ("t-1", "Hello "), ("t-1", "again. ")]
    flush = s.receive_text(cmd(type="flush"), 0.3)
    assert opened(flush) == []
    out = up(s, chunk("t-1", tone(20)), done("t-1"))
    assert types(out)[-1] == "audio_end"


def test_upstream_closed_before_a_flush_resends_then_ends():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="Hello."), 0.1)
    s.upstream_closed(s.upstream_epoch, 1.0)
    out = s.receive_text(cmd(type="flush"), 0.2)
    assert len(opened(out)) == 1
    assert [(f["transcript"], f["continue"]) for f in sent(out)] == [("Hello.", True),
                                                                     ("", False)]


def test_upstream_closed_mid_utterance_ends_it_and_forgets_its_context():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "One.")
    out = s.upstream_closed(s.upstream_epoch, 1.0)
    assert [e["type"] for e in client_events(out)] == ["error", "audio_end"]
    nxt = speak(s, "Two.")
    assert [f["context_id"] for f in sent(nxt)] == ["t-2", "t-2"]  # t-1 is not re-sent
    out = up(s, chunk("t-2", tone(20)), done("t-2"))
    assert types(out)[-1] == "audio_end" and client_events(out)[-1]["id"] == 2


# -- native and passthrough ---------------------------------------------------------------

def test_native_mode_opens_the_same_websocket_and_relays_frames_unchanged():
    s = make()
    own = orjson.dumps({"model_id": "sonic-3", "transcript": "Hi", "context_id": "c",
                        "voice": {"mode": "id", "id": "v"}, "continue": False,
                        "output_format": {"container": "raw", "encoding": "pcm_s16le",
                                          "sample_rate": 16000}}).decode()
    out = s.receive_text(own, 0.0)
    (request,) = opened(out)
    assert request.request.url == "wss://api.cartesia.ai/tts/websocket"
    assert dict(request.request.headers)["X-API-Key"] == "sk-provider"
    assert upstream_frames(out) == [own]
    answer = chunk("c", tone(10))
    assert [a.frame for a in s.receive_upstream(s.upstream_epoch, answer, 0.1)] == [answer]


def test_native_usage_counts_each_contexts_audio_in_the_format_it_asked_for():
    s = make()

    def request(context_id: str, encoding: str, rate: int, container: str = "raw",
                **extra) -> str:
        return orjson.dumps({"model_id": "sonic-3", "transcript": "Hi", "context_id": context_id,
                             "voice": {"mode": "id", "id": "v"}, "continue": False,
                             "output_format": {"container": container, "encoding": encoding,
                                               "sample_rate": rate, **extra}}).decode()

    s.receive_text(request("a", "pcm_s16le", 16000), 0.0)
    s.receive_text(request("b", "pcm_f32le", 44100), 0.0)
    s.receive_text(request("c", "pcm_mulaw", 8000), 0.0)
    s.receive_text(request("d", "mp3", 44100, container="mp3", bit_rate=128000), 0.0)
    up(s, chunk("a", bytes(3200)), chunk("b", bytes(4 * 4410)), chunk("c", bytes(800)),
       chunk("d", bytes(1600)), done("a"), '{"type":"timestamps","context_id":"a"}')
    assert s.usage.audio_ms == pytest.approx(100.0 * 3 + 100.0)
    up(s, chunk("unnamed-context", bytes(1600)))  # the latest format asked for
    assert s.usage.audio_ms == pytest.approx(500.0)


def test_passthrough_request_keeps_the_query_but_not_the_client_credential():
    d = CartesiaDialect(CARTESIA, BASE, "sk-provider")
    req = d.passthrough_request("/tts/websocket",
                                "api_key=gw-secret&cartesia_version=2025-04-16&x=1", None)
    assert req.url == "wss://api.cartesia.ai/tts/websocket?cartesia_version=2025-04-16&x=1"
    headers = dict(req.headers)
    assert headers["X-API-Key"] == "sk-provider" and "gw-secret" not in str(req)
    other = d.passthrough_request("/tts/websocket", "", "sk-other")
    assert other.url == "wss://api.cartesia.ai/tts/websocket"
    assert dict(other.headers)["X-API-Key"] == "sk-other"
    for bad in ("/voices", "/tts/bytes", "/tts/websocket/../../api-keys",
                "/tts/websocket%2F..%2F..%2Fapi-keys"):
        with pytest.raises(ValueError):
            d.passthrough_request(bad, "", None)
