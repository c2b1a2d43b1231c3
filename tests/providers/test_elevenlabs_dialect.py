"""Golden transcripts of the unified TTS session over the ElevenLabs dialect: client
frames and ElevenLabs' own answers in, actions out. No sockets, no clock."""

from __future__ import annotations

import base64
import math
import struct
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from protocol.helpers import (
    PRO,
    audio_of,
    client_events,
    close_code,
    closed_upstreams,
    cmd,
    opened,
    types,
    upstream_frames,
)
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.elevenlabs import ElevenLabsDialect, classify_error
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.vocabulary import Audio, Settings, UpstreamError, Words

ELEVENLABS = ENDPOINTS["elevenlabs"]
BASE = "wss://api.elevenlabs.invalid"
KEY = "xi-secret"
VOICE = ELEVENLABS.default_voice


def make(defaults=None):
    dialect = ElevenLabsDialect(ELEVENLABS, BASE, KEY)
    return TtsSession(endpoint=ELEVENLABS, dialect=dialect, tier=PRO, now=0.0,
                      defaults=defaults)


def tone(ms: int, rate: int, freq: int = 440) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate))
                                   for i in range(n)))


def audio_msg(pcm: bytes, context: str, alignment: dict | None = None) -> str:
    message = {"audio": base64.b64encode(pcm).decode(), "contextId": context}
    if alignment is not None:
        message["alignment"] = alignment
    return orjson.dumps(message).decode()


def final_msg(context: str) -> str:
    return orjson.dumps({"isFinal": True, "contextId": context}).decode()


def frames_json(actions) -> list[dict]:
    return [orjson.loads(f) for f in upstream_frames(actions)]


def speak(s: TtsSession, text: str) -> list[dict]:
    s.receive_text(cmd(type="input_text", text=text), 0.0)
    return frames_json(s.receive_text(cmd(type="flush"), 0.0))


def up(s: TtsSession, frame: str):
    return s.receive_upstream(s.upstream_epoch, frame, 0.0)


# -- opening ----------------------------------------------------------------------------

def test_init_is_ready_with_native_capabilities_and_opens_multi_stream_input():
    s = make()
    actions = s.receive_text(cmd(type="init", context_id="c-1"), 0.0)
    (ready,) = client_events(actions)
    caps = ready["capabilities"]
    assert ready["type"] == "ready" and ready["session"]["voice_id"] == VOICE
    assert caps["supports_stop"] and caps["supports_clear"] and caps["supports_configure"]
    assert caps["configure_reconnects"] is False and caps["word_timestamps"] is True
    (request,) = [o.request for o in opened(actions)]
    url = urlsplit(request.url)
    assert f"{url.scheme}://{url.netloc}" == BASE
    assert url.path == f"/v1/text-to-speech/{VOICE}/multi-stream-input"
    query = parse_qs(url.query)
    assert query["output_format"] == ["pcm_24000"] and query["sync_alignment"] == ["true"]
    assert request.headers == (("xi-api-key", KEY),)
    assert upstream_frames(actions) == []  # each context carries its own settings


@pytest.mark.parametrize("client_rate, pcm", [
    (16000, "pcm_16000"), (22050, "pcm_22050"), (24000, "pcm_24000"), (44100, "pcm_44100"),
    (8000, "pcm_24000"), (32000, "pcm_24000"), (48000, "pcm_24000"),
])
def test_output_format_is_pcm_at_the_client_rate_when_offered(client_rate, pcm):
    s = make()
    actions = s.receive_text(cmd(type="init", sample_rate_hz=client_rate), 0.0)
    query = parse_qs(urlsplit(opened(actions)[0].request.url).query)
    assert query["output_format"] == [pcm]
    assert s.dialect.sample_rate == int(pcm.split("_")[1])


def test_extras_go_where_elevenlabs_wants_them():
    s = make()
    actions = s.receive_text(cmd(
        type="init", voice_id="voiceA", language="de", model_id="eleven_flash_v2_5",
        voice_settings={"stability": 0.5, "similarity_boost": 0.75},
        generation_config={"chunk_length_schedule": [120, 160]}), 0.0)
    url = urlsplit(opened(actions)[0].request.url)
    query = parse_qs(url.query)
    assert url.path == "/v1/text-to-speech/voiceA/multi-stream-input"
    assert query["model_id"] == ["eleven_flash_v2_5"] and query["language_code"] == ["de"]
    first, text, close = speak(s, "Hallo Welt")
    assert first == {"text": " ", "context_id": "u1",
                     "voice_settings": {"stability": 0.5, "similarity_boost": 0.75},
                     "generation_config": {"chunk_length_schedule": [120, 160]}}
    assert text == {"text": "Hallo Welt ", "context_id": "u1", "flush": True}
    assert close == {"context_id": "u1", "close_context": True}


# -- one utterance ------------------------------------------------------------------------

def test_text_is_held_until_flush_then_one_context_with_a_trailing_space():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    assert upstream_frames(s.receive_text(cmd(type="input_text", text="Hello "), 0.0)) == []
    assert upstream_frames(s.receive_text(cmd(type="input_text", text="world"), 0.0)) == []
    frames = frames_json(s.receive_text(cmd(type="flush"), 0.0))
    assert frames == [
        {"text": " ", "context_id": "u1"},
        {"text": "Hello world ", "context_id": "u1", "flush": True},
        {"context_id": "u1", "close_context": True},
    ]


def test_audio_at_the_provider_rate_then_is_final_ends_the_utterance():
    s = make()
    s.receive_text(cmd(type="init", sample_rate_hz=16000), 0.0)
    speak(s, "Hello")
    pcm = tone(100, 16000)
    out = up(s, audio_msg(pcm[:1001], "u1"))  # split inside a sample
    out += up(s, audio_msg(pcm[1001:], "u1"))
    assert "audio_end" not in types(out)
    out += up(s, final_msg("u1"))
    events = client_events(out)
    assert events[-1]["type"] == "audio_end" and events[-1]["interrupted"] is False
    assert audio_of(out) == pcm  # 16 kHz in and out: every sample, none twice
    assert events[-1]["total_duration_ms"] == pytest.approx(100, abs=0.05)


def test_audio_event_carries_the_rate_asked_for():
    d = ElevenLabsDialect(ELEVENLABS, BASE, KEY)
    d.prefer_output(44100)
    d.request(Settings())
    d.input_text("hi")
    d.flush()
    (audio,) = d.receive(audio_msg(tone(10, 44100), "u1"))
    assert isinstance(audio, Audio) and audio.sample_rate == 44100


def test_whitespace_only_flush_is_answered_at_once():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="   "), 0.0)
    out = s.receive_text(cmd(type="flush"), 0.0)
    assert types(out) == ["audio_end"] and upstream_frames(out) == []


def test_interleaved_contexts_are_reported_in_utterance_order():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "first")
    speak(s, "second")
    a, b = tone(40, 24000, 300), tone(40, 24000, 900)
    out = up(s, audio_msg(b, "u2"))  # the provider answers the later context first
    out += up(s, final_msg("u2"))
    assert client_events(out) == []  # held until u1 is done
    out += up(s, audio_msg(a, "u1"))
    out += up(s, final_msg("u1"))
    ends = [e for e in client_events(out) if e["type"] == "audio_end"]
    assert [e["id"] for e in ends] == [1, 2]
    assert audio_of(out) == a + b
    assert [e["total_duration_ms"] for e in ends] == pytest.approx([40, 40], abs=0.05)


# -- stop, clear, configure --------------------------------------------------------------

def test_stop_closes_every_context_in_flight_and_drops_their_late_audio():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "a long sentence")
    speak(s, "and another")
    up(s, audio_msg(tone(20, 24000), "u1"))
    out = s.receive_text(cmd(type="stop"), 0.0)
    assert frames_json(out) == [{"context_id": "u1", "close_context": True},
                                {"context_id": "u2", "close_context": True}]
    assert closed_upstreams(out) == [] and opened(out) == []  # no reconnect
    ends = [e for e in client_events(out) if e["type"] == "audio_end"]
    assert [(e["id"], e["interrupted"]) for e in ends] == [(1, True), (2, True)]
    late = up(s, audio_msg(tone(20, 24000), "u1")) + up(s, final_msg("u1"))
    late += up(s, audio_msg(tone(20, 24000), "u2")) + up(s, final_msg("u2"))
    assert client_events(late) == []
    frames = speak(s, "next")
    assert frames[1] == {"text": "next ", "context_id": "u3", "flush": True}
    pcm = tone(30, 24000)
    out = up(s, audio_msg(pcm, "u3")) + up(s, final_msg("u3"))
    assert audio_of(out) == pcm
    assert client_events(out)[-1] == {"type": "audio_end", "id": 3, "total_duration_ms": 30.0,
                                      "interrupted": False, "context_id": s.context_id}


def test_stop_with_only_unflushed_text_sends_nothing():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="never said"), 0.0)
    out = s.receive_text(cmd(type="stop"), 0.0)
    assert upstream_frames(out) == []
    assert [(e["type"], e["interrupted"]) for e in client_events(out)] == [("audio_end", True)]


def test_clear_drops_unflushed_text():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="forget me"), 0.0)
    assert s.receive_text(cmd(type="clear"), 0.0) == []
    assert speak(s, "keep")[1]["text"] == "keep "


def test_configure_opens_the_next_context_with_the_new_settings():
    s = make()
    s.receive_text(cmd(type="init", voice_settings={"stability": 0.5}), 0.0)
    assert speak(s, "one")[0]["voice_settings"] == {"stability": 0.5}
    out = s.receive_text(cmd(type="configure", style={"stability": 0.9, "speed": 1.1},
                             generation_config={"chunk_length_schedule": [50]}), 0.0)
    assert out == []  # nothing to send yet, and no reconnect
    first = speak(s, "two")[0]
    assert first == {"text": " ", "context_id": "u2",
                     "voice_settings": {"stability": 0.9, "speed": 1.1},
                     "generation_config": {"chunk_length_schedule": [50]}}


def test_a_voice_change_is_reported_as_needing_a_new_connection():
    d = ElevenLabsDialect(ELEVENLABS, BASE, KEY)
    d.request(Settings(voice_id="a"))
    assert not d.configure_needs_reconnect(Settings(voice_id="a", style={"speed": 1.1}))
    assert d.configure_needs_reconnect(Settings(voice_id="b"))
    assert d.configure_needs_reconnect(Settings(voice_id="a", extras={"model_id": "m"}))


# -- keep-alive, reconnects -----------------------------------------------------------------

def test_keepalive_is_a_single_space_inside_the_inactivity_timeout():
    s = make()
    assert s.dialect.keepalive_interval is not None and s.dialect.keepalive_interval < 20
    assert s.keepalive(1.0) == []  # nothing open yet
    s.receive_text(cmd(type="init"), 0.0)
    assert frames_json(s.keepalive(15.0)) == [{"text": " "}]


def test_an_idle_drop_is_invisible_and_the_next_flush_reconnects():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    epoch = s.upstream_epoch
    timeout = orjson.dumps({"message": "Have not received a new text input within the timeout "
                                       "of 20 seconds.", "error": "input_timeout_exceeded",
                            "code": 1008}).decode()
    assert up(s, timeout) == []
    assert s.upstream_closed(epoch, 20.0) == []
    s.receive_text(cmd(type="input_text", text="again"), 21.0)
    out = s.receive_text(cmd(type="flush"), 21.0)
    assert len(opened(out)) == 1
    assert orjson.loads(upstream_frames(out)[1])["context_id"] == "u1"
    pcm = tone(20, 24000)
    done = up(s, audio_msg(pcm, "u1")) + up(s, final_msg("u1"))
    assert audio_of(done) == pcm and types(done)[-1] == "audio_end"


# -- alignment -> word timestamps ---------------------------------------------------------

def alignment(text: str, start: int, step: int) -> dict:
    return {"chars": list(text), "charStartTimesMs": [start + i * step for i in range(len(text))],
            "charDurationsMs": [step] * len(text)}


def test_character_alignment_becomes_words_timed_from_the_utterance_start():
    s = make()
    s.receive_text(cmd(type="init", word_timestamps=True), 0.0)
    speak(s, "Hello big world")
    # 100 ms chunks; "big" spans the two chunks; times are relative to each chunk.
    out = up(s, audio_msg(tone(100, 24000), "u1", alignment("Hello bi", 0, 10)))
    out += up(s, audio_msg(tone(100, 24000), "u1", alignment("g world", 0, 10)))
    out += up(s, final_msg("u1"))
    stamps = [e for e in client_events(out) if e["type"] == "word_timestamps"]
    words = [w for e in stamps for w in e["words"]]
    starts = [t for e in stamps for t in e["start_ms"]]
    ends = [t for e in stamps for t in e["end_ms"]]
    assert words == ["Hello", "big", "world"]
    assert starts == [0, 60, 120] and ends == [50, 110, 170]
    assert types(out)[-1] == "audio_end"


def test_no_word_timestamps_unless_asked():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "Hi")
    out = up(s, audio_msg(tone(50, 24000), "u1", alignment("Hi ", 0, 10)))
    assert "word_timestamps" not in types(out)


def test_normalized_alignment_and_the_misspelt_durations_field_are_understood():
    d = ElevenLabsDialect(ELEVENLABS, BASE, KEY)
    d.request(Settings())
    d.input_text("one")
    d.flush()
    events = d.receive(orjson.dumps({
        "audio": base64.b64encode(tone(10, 24000)).decode(), "contextId": "u1",
        "normalizedAlignment": {"chars": list("one "), "charStartTimesMs": [0, 1, 2, 3],
                                "charsDurationsMs": [1, 1, 1, 1]}}).decode())
    (words,) = [e for e in events if isinstance(e, Words)]
    assert words == Words(("one",), (0.0,), (3.0,))


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("error, message, retryable", [
    ("quota_exceeded", "This request exceeds your quota.", False),
    ("invalid_api_key", "Invalid API key", False),
    ("auth_error", "You must be authenticated to use this endpoint.", False),
    ("rate_limit_exceeded", "Too many requests", True),
    ("too_many_concurrent_requests", "Concurrency limit reached", True),
    ("system_busy", "The system is experiencing heavy traffic, please try again.", True),
])
def test_provider_errors_map_to_upstream_errors_with_honest_retryable(error, message, retryable):
    assert classify_error({"message": message, "error": error, "code": 1008}) == (message, retryable)
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "hello")
    out = up(s, orjson.dumps({"message": message, "error": error, "code": 1008}).decode())
    err = client_events(out)[0]
    assert err["type"] == "error" and err["code"] == "provider_error"
    assert err["retryable"] is retryable and message in err["message"]
    if retryable:  # the session goes on; the close that follows ends the utterance
        assert close_code(out) is None
        closed = s.upstream_closed(s.upstream_epoch, 0.0)
        assert [e["type"] for e in client_events(closed)] == ["error", "audio_end"]
    else:  # retrying cannot help: the session ends
        assert close_code(out) == 1011 and types(out)[-1] == "session_ended"


def test_error_event_shape():
    d = ElevenLabsDialect(ELEVENLABS, BASE, KEY)
    d.request(Settings())
    (event,) = d.receive('{"message":"Too many requests","error":"rate_limit_exceeded","code":1008}')
    assert event == UpstreamError("ElevenLabs: Too many requests", retryable=True, fatal=False)


# -- native mode and the SDK routes ----------------------------------------------------------

def test_native_mode_opens_stream_input_and_relays_frames_unchanged():
    s = make(defaults={"voice_id": "nativeVoice"})
    first = orjson.dumps({"text": "Hello world", "voice_settings": {"stability": 0.5}}).decode()
    out = s.receive_text(first, 0.0)
    (request,) = [o.request for o in opened(out)]
    url = urlsplit(request.url)
    assert url.path == "/v1/text-to-speech/nativeVoice/stream-input"
    assert "sync_alignment" not in parse_qs(url.query)
    assert request.headers == (("xi-api-key", KEY),)
    assert upstream_frames(out) == [first]
    answer = audio_msg(tone(10, 24000), "ignored")
    assert [a.frame for a in s.receive_upstream(s.upstream_epoch, answer, 0.1)] == [answer]
    assert frames_json(s.keepalive(15.0)) == [{"text": " "}]


def test_native_usage_counts_the_base64_audio_in_the_connections_format():
    s = make()
    s.receive_text('{"text": " "}', 0.0)  # native, on the gateway's own pcm_24000
    s.receive_upstream(s.upstream_epoch, audio_msg(tone(250, 24000), "x"), 0.1)
    s.receive_upstream(s.upstream_epoch, '{"isFinal": true}', 0.2)
    assert s.usage.audio_ms == pytest.approx(250.0)
    # The SDK route: the SDK's own output_format, else ElevenLabs' default mp3_44100_128.
    for query, payload, ms in (("output_format=ulaw_8000", bytes(800), 100.0),
                               ("output_format=pcm_16000", bytes(3200), 100.0),
                               ("", bytes(16000), 1000.0),  # 128 kbit/s
                               ("output_format=opus_48000_64", bytes(8000), 1000.0),
                               ("output_format=wav_unknown", bytes(100), 0.0)):
        s = make()
        s.passthrough = s.dialect.passthrough_request(
            "/v1/text-to-speech/V/stream-input", query, None)
        s.receive_text('{"text": " "}', 0.0)
        s.receive_upstream(s.upstream_epoch, audio_msg(payload, "x"), 0.1)
        assert s.usage.audio_ms == pytest.approx(ms), query


def test_passthrough_request_maps_the_sdk_path_onto_the_upstream():
    d = ElevenLabsDialect(ELEVENLABS, "ws://127.0.0.1:9/", KEY)
    req = d.passthrough_request("/v1/text-to-speech/VOICE/stream-input",
                                "model_id=m&output_format=pcm_16000&xi_api_key=client", None)
    assert req.url == "ws://127.0.0.1:9/v1/text-to-speech/VOICE/stream-input?model_id=m&output_format=pcm_16000"
    assert req.headers == (("xi-api-key", KEY),)
    req = d.passthrough_request("/v1/text-to-speech/V/multi-stream-input", "", "other-key")
    assert req.url == "ws://127.0.0.1:9/v1/text-to-speech/V/multi-stream-input"
    assert req.headers == (("xi-api-key", "other-key"),)
    https = ElevenLabsDialect(ELEVENLABS, "https://api.elevenlabs.io", KEY)
    assert https.passthrough_request("/v1/text-to-speech/V/stream-input", "", None).url \
        == "wss://api.elevenlabs.io/v1/text-to-speech/V/stream-input"
    for bad in ("/v1/voices", "/v1/text-to-speech/../../admin/stream-input",
                "/v1/text-to-speech/%2e%2e/%2e%2e/v1/user/stream-input",
                "/v1/text-to-speech/V/x/stream-input", "/v1/text-to-speech/V/stream-inputs"):
        with pytest.raises(ValueError):
            d.passthrough_request(bad, "", None)


def test_a_mid_utterance_drop_forgets_the_old_contexts():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    speak(s, "lost")
    closed = s.upstream_closed(s.upstream_epoch, 1.0)
    assert [(e["type"], e.get("retryable")) for e in client_events(closed)] == [
        ("error", True), ("audio_end", None)]
    s.receive_text(cmd(type="input_text", text="found"), 2.0)
    out = s.receive_text(cmd(type="flush"), 2.0)
    assert len(opened(out)) == 1 and frames_json(out)[1]["context_id"] == "u2"
    pcm = tone(20, 24000)
    done = up(s, audio_msg(pcm, "u2")) + up(s, final_msg("u2"))
    assert audio_of(done) == pcm and client_events(done)[-1]["id"] == 2


def test_flushes_beyond_the_context_limit_wait_for_a_free_context():
    from slng_fast.providers.elevenlabs import MAX_CONTEXTS
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    for i in range(MAX_CONTEXTS):
        assert speak(s, f"s{i}")[1]["context_id"] == f"u{i + 1}"
    waiting = MAX_CONTEXTS + 1
    assert speak(s, "later") == [{"text": " "}]  # held back; a harmless frame instead
    out = up(s, audio_msg(tone(10, 24000), "u1")) + up(s, final_msg("u1"))
    sent = frames_json(out)
    assert [f.get("context_id") for f in sent] == [f"u{waiting}"] * 3
    assert sent[1] == {"text": "later ", "context_id": f"u{waiting}", "flush": True}
    # a stop closes the sent contexts only; a queued one never left
    assert speak(s, "b") == [{"text": " "}]  # u6 waits (u2..u5 live)
    stop = frames_json(s.receive_text(cmd(type="stop"), 0.0))
    assert [f["context_id"] for f in stop] == [f"u{i}" for i in range(2, waiting + 1)]
    # stopped contexts hold the provider's slots until their isFinal comes
    assert speak(s, "c") == [{"text": " "}]
    out = up(s, final_msg("u2"))
    assert [f["context_id"] for f in frames_json(out)] == ["u7"] * 3
    assert client_events(out) == []
