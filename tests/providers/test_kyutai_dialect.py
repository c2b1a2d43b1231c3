"""Golden transcripts of the Kyutai STT dialect (moshi-server asr-streaming): no sockets.
The dialect alone, then inside an ``SttSession``."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.helpers import PRO, client_events, cmd, opened, upstream_frames
from slng_fast import _native
from slng_fast.protocol.actions import SendClient, SendUpstream
from slng_fast.protocol.stt import SttSession
from slng_fast.providers.kyutai import (
    FRAME_SAMPLES,
    PAUSE_STEPS,
    PRIME_FRAMES,
    SILENCE_FRAME,
    KyutaiDialect,
)
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.vocabulary import (
    FinalTranscript,
    Ignored,
    Reply,
    Transcript,
    UpstreamError,
    UpstreamReady,
)

KYUTAI = ENDPOINTS["kyutai"]
pack = _native.msgpack_encode
unpack = _native.msgpack_decode


def make(url="ws://moshi.invalid:8080", key="secret") -> KyutaiDialect:
    return KyutaiDialect(KYUTAI, url, key)


def f32(samples) -> bytes:
    return np.asarray(samples, dtype="<f4").tobytes()


def step(i=0) -> bytes:
    return pack({"type": "Step", "step_idx": i, "prs": [0.0, 0.0, 0.0], "buffered_pcm": 0})


def word(text, t=0.0) -> bytes:
    return pack({"type": "Word", "text": text, "start_time": t})


def marker(i) -> bytes:
    return pack({"type": "Marker", "id": i})


def decoded(frames):
    return [unpack(f) for f in frames]


# ---- the dialect alone ------------------------------------------------------------------

def test_declares_float32_at_24k():
    d = make()
    assert (d.model_rate, d.model_format) == (24000, "f32")


@pytest.mark.parametrize("base", ["ws://moshi.invalid:8080", "ws://moshi.invalid:8080/",
                                  "ws://moshi.invalid:8080/api/asr-streaming"])
def test_request_has_the_path_and_the_api_key_header(base):
    req = make(base).request()
    assert req.url == "ws://moshi.invalid:8080/api/asr-streaming"
    assert req.headers == (("kyutai-api-key", "secret"),)
    assert make(base, None).request().headers == ()


def test_no_settings_message():
    assert make().open_frames("en", {"x": 1}) == []


def test_audio_goes_out_in_frames_of_1920_float32_samples():
    d = make()
    samples = np.linspace(-0.5, 0.5, 5000, dtype="<f4")
    first = d.audio(samples[:1000].tobytes(), 0.0)
    assert first == []  # under one 80 ms frame: held back
    frames = d.audio(samples[1000:].tobytes(), 0.0)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    msgs = decoded(frames)
    assert [m["type"] for m in msgs] == ["Audio", "Audio"]
    assert [len(m["pcm"]) for m in msgs] == [FRAME_SAMPLES, FRAME_SAMPLES]
    sent = np.asarray(msgs[0]["pcm"] + msgs[1]["pcm"], dtype="<f4")
    assert np.array_equal(sent, samples[: 2 * FRAME_SAMPLES])
    assert frames[0] == _native.kyutai_audio_frame(samples[:FRAME_SAMPLES].tobytes())


def test_finalize_flushes_the_rest_padded_then_marker_then_silence():
    d = make()
    d.audio(f32([0.25] * 100), 0.0)
    frames = d.finalize(0.0)
    msgs = decoded(frames)
    assert msgs[0]["type"] == "Audio" and len(msgs[0]["pcm"]) == FRAME_SAMPLES
    assert msgs[0]["pcm"][:100] == [0.25] * 100 and set(msgs[0]["pcm"][100:]) == {0.0}
    assert msgs[1] == {"type": "Marker", "id": 0}
    assert frames[2:] == [SILENCE_FRAME] * PRIME_FRAMES
    assert unpack(SILENCE_FRAME) == {"type": "Audio", "pcm": [0.0] * FRAME_SAMPLES}
    # nothing held back: the next finalize is a marker and silence only, with a new id
    again = decoded(d.finalize(0.0))
    assert again[0] == {"type": "Marker", "id": 1} and len(again) == 1 + PRIME_FRAMES


def test_steps_while_a_marker_is_outstanding_are_answered_with_silence():
    d = make()
    assert d.receive(step(0)) == [Ignored("Step")]
    d.finalize(0.0)
    assert d.receive(step(1)) == [Reply((SILENCE_FRAME,))]
    assert d.receive(step(2)) == [Reply((SILENCE_FRAME,))]
    assert d.receive(marker(0)) == [FinalTranscript("")]
    assert d.receive(step(3)) == [Ignored("Step")]  # no marker left: no more silence


def test_words_make_partials_then_one_final_at_the_marker():
    d = make()
    d.audio(f32([0.0] * 4000), 0.0)
    assert d.receive(pack({"type": "Ready"})) == [UpstreamReady(sample_rate=24000)]
    assert d.receive(word("Hello", 0.5)) == [Transcript("Hello", False)]
    assert isinstance(d.receive(pack({"type": "EndWord", "stop_time": 0.8}))[0], Ignored)
    assert d.receive(word("world", 0.9)) == [Transcript("Hello world", False)]
    d.finalize(0.0)
    assert d.receive(step()) == [Reply((SILENCE_FRAME,))]
    assert d.receive(word("again", 1.4)) == [Transcript("Hello world again", False)]
    assert d.receive(marker(0)) == [Transcript("Hello world again", True),
                                    FinalTranscript("Hello world again")]
    # the next segment starts afresh: nothing repeated
    assert d.receive(word("Next", 3.0)) == [Transcript("Next", False)]
    d.finalize(0.0)
    assert d.receive(marker(1)) == [Transcript("Next", True), FinalTranscript("Next")]


def test_a_pause_of_steps_without_words_ends_the_segment():
    d = make()
    d.receive(word("one"))
    d.receive(word("two"))
    events = [e for _ in range(PAUSE_STEPS) for e in d.receive(step())]
    assert [e for e in events if isinstance(e, Transcript)] == [Transcript("one two", True)]
    assert d.receive(word("three")) == [Transcript("three", False)]
    for _ in range(PAUSE_STEPS - 1):
        assert d.receive(step()) == [Ignored("Step")]
    d.finalize(0.0)
    assert d.receive(marker(0)) == [Transcript("three", True), FinalTranscript("one two three")]


def test_words_keep_a_segment_open_however_many_steps():
    d = make()
    out = []
    for i in range(3 * PAUSE_STEPS):
        out += d.receive(step(i))
        if i % (PAUSE_STEPS - 1) == 0:
            out += d.receive(word(f"w{i}"))
    assert not any(isinstance(e, Transcript) and e.is_final for e in out)


def test_two_finalizes_each_get_their_final_transcript():
    d = make()
    d.receive(word("first"))
    d.finalize(0.0)
    d.finalize(0.0)
    assert d.receive(step()) == [Reply((SILENCE_FRAME,))]
    assert d.receive(marker(0)) == [Transcript("first", True), FinalTranscript("first")]
    assert d.receive(step()) == [Reply((SILENCE_FRAME,))]  # marker 1 still out
    assert d.receive(marker(1)) == [FinalTranscript("")]
    assert d.receive(step()) == [Ignored("Step")]


def test_markers_it_did_not_send_are_ignored():
    d = make()
    assert isinstance(d.receive(marker(42))[0], Ignored)
    d.finalize(0.0)
    assert isinstance(d.receive(marker(42))[0], Ignored)
    assert d.receive(marker(0)) == [FinalTranscript("")]


def test_error_maps_to_an_upstream_error():
    (err,) = make().receive(pack({"type": "Error", "message": "model overloaded"}))
    assert err == UpstreamError("model overloaded")
    assert make().receive(pack({"type": "Error"})) == [UpstreamError("Kyutai STT error")]


@pytest.mark.parametrize("frame", ["text", b"\xc1", pack([1, 2]), pack({"type": "Other"}),
                                   word("", 1.0)])
def test_other_frames_are_ignored(frame):
    (event,) = make().receive(frame)
    assert isinstance(event, Ignored)


def test_keepalive_is_silence_when_the_upstream_heard_nothing_for_an_interval():
    d = make()
    assert d.keepalive_interval and d.keepalive() == [SILENCE_FRAME]
    assert d.keepalive() == [SILENCE_FRAME]
    d.audio(f32([0.5] * (FRAME_SAMPLES + 10)), 0.0)  # one frame sent, 10 samples held
    assert d.keepalive() == []  # audio is flowing: no silence cut into it
    frames = d.keepalive()  # quiet for a whole interval: the rest first, then silence
    assert len(frames) == 2 and frames[1] == SILENCE_FRAME
    assert unpack(frames[0])["pcm"][:10] == [0.5] * 10
    d.finalize(0.0)
    assert d.keepalive() == []
    assert d.keepalive() == [SILENCE_FRAME]


# ---- inside an SttSession -----------------------------------------------------------------

def session() -> SttSession:
    return SttSession(endpoint=KYUTAI, dialect=make(), tier=PRO, now=0.0)


def test_session_converts_16k_pcm16_to_24k_float32_frames():
    s = session()
    out = s.receive_text(cmd(type="start", sample_rate=16000, encoding="pcm16"), 0.0)
    (ready,) = client_events(out)
    assert ready["type"] == "ready" and ready["model_id"] == "kyutai"
    (op,) = opened(out)
    assert op.request.url.endswith("/api/asr-streaming")
    tone = (np.sin(np.arange(16000) / 10) * 8000).astype("<i2").tobytes()  # 1 s at 16 kHz
    frames = upstream_frames(s.receive_binary(tone, 0.1))
    msgs = decoded(frames)
    assert msgs and all(m["type"] == "Audio" and len(m["pcm"]) == FRAME_SAMPLES for m in msgs)
    # about 1 s at 24 kHz, less the resampler's look-ahead and what waits for a whole frame
    assert 24000 - 3 * FRAME_SAMPLES <= len(msgs) * FRAME_SAMPLES <= 24000
    assert 0.1 < max(abs(v) for m in msgs for v in m["pcm"]) < 0.3


def test_session_golden_transcript():
    s = session()
    s.receive_text(cmd(type="start"), 0.0)
    s.receive_binary(b"\x00\x00" * 16000, 0.5)
    e = s.upstream_epoch
    assert client_events(s.receive_upstream(e, pack({"type": "Ready"}), 0.6)) == []
    (partial,) = client_events(s.receive_upstream(e, word("hello", 0.1), 0.7))
    assert partial["type"] == "transcript" and partial["text"] == "hello"
    assert partial["is_final"] is False
    (partial,) = client_events(s.receive_upstream(e, word("world", 0.4), 0.8))
    assert partial["text"] == "hello world"
    fin = upstream_frames(s.receive_text(cmd(type="finalize"), 0.9))
    kinds = [unpack(f)["type"] for f in fin]
    assert "Marker" in kinds and kinds[kinds.index("Marker") + 1:] == ["Audio"] * PRIME_FRAMES
    # Steps while waiting: silence goes upstream, nothing to the client
    out = s.receive_upstream(e, step(20), 1.0)
    assert client_events(out) == [] and upstream_frames(out) == [SILENCE_FRAME]
    out = s.receive_upstream(e, marker(0), 1.1)
    seg, final = client_events(out)
    assert seg["type"] == "transcript" and seg["is_final"] is True and seg["text"] == "hello world"
    assert final["type"] == "final_transcript" and final["text"] == "hello world"
    assert final["audio_duration_seconds"] == pytest.approx(1.0)
    # a second finalize: only what came after the first
    s.receive_text(cmd(type="finalize"), 1.2)
    (again,) = client_events(s.receive_upstream(e, marker(1), 1.3))
    assert again["type"] == "final_transcript" and again["text"] == ""


def test_session_error_is_a_non_fatal_provider_error():
    s = session()
    s.receive_text(cmd(type="start"), 0.0)
    (err,) = client_events(s.receive_upstream(s.upstream_epoch,
                                              pack({"type": "Error", "message": "bad"}), 0.1))
    assert err["type"] == "error" and err["code"] == "provider_error" and "bad" in err["message"]
    assert not s.ended


def test_native_mode_relays_msgpack_both_ways():
    s = session()
    out = s.receive_text("hello kyutai", 0.0)  # plain text first: native mode
    assert s.mode == "native" and opened(out)
    audio = _native.kyutai_audio_frame(f32([0.1] * FRAME_SAMPLES))
    assert upstream_frames(s.receive_binary(audio, 0.1)) == [audio]
    w = word("hi", 0.2)
    assert [a.frame for a in s.receive_upstream(s.upstream_epoch, w, 0.3)
            if isinstance(a, SendClient)] == [w]
    assert all(not isinstance(a, SendUpstream) or a.frame != SILENCE_FRAME
               for a in s.receive_upstream(s.upstream_epoch, step(), 0.4))


def test_a_first_binary_frame_that_is_a_moshi_message_is_native():
    d = make()
    assert d.is_native_frame(_native.kyutai_audio_frame(f32([0.0] * 10)))
    assert d.is_native_frame(_native.kyutai_marker_frame(1))
    assert not d.is_native_frame(b"\x00\x00" * 320)  # PCM16 silence
    assert not d.is_native_frame(b"")
    assert not d.is_native_frame(pack({"no": "type"}))
    assert not d.is_native_frame(b"\x81\xa4type")  # a truncated map is audio, not msgpack


def test_a_gap_in_the_word_timestamps_ends_the_segment():
    d = make()
    assert d.receive(word("one", 0.5)) == [Transcript("one", False)]
    d.receive(pack({"type": "EndWord", "stop_time": 0.8}))
    assert d.receive(word("two", 1.0)) == [Transcript("one two", False)]
    d.receive(pack({"type": "EndWord", "stop_time": 1.3}))
    # a second and more of silence by the audio clock, however quickly it arrived
    assert d.receive(word("three", 1.3 + PAUSE_STEPS * 0.08 + 0.01)) == [
        Transcript("one two", True), Transcript("three", False)]
    d.finalize(0.0)
    assert d.receive(marker(0)) == [Transcript("three", True),
                                    FinalTranscript("one two three")]


def test_native_audio_ms_counts_the_samples_of_audio_messages():
    d = make()
    assert d.native_audio_ms(_native.kyutai_audio_frame(f32([0.0] * FRAME_SAMPLES))) == 80.0
    assert d.native_audio_ms(_native.kyutai_marker_frame(1)) == 0.0
    assert d.native_audio_ms(b"\x00\x01") == 0.0
