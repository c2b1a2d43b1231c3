"""Golden transcripts of the WhisperLive dialect, alone and inside the unified STT session.
No sockets."""

from __future__ import annotations

import struct

import orjson
import pytest

from protocol.helpers import PRO, client_events, close_code, cmd, types, upstream_frames
from slng_fast.config import Config, ProviderConfig
from slng_fast.protocol.stt import SttSession
from slng_fast.providers.base import (
    FinalTranscript,
    Ignored,
    Reply,
    Transcript,
    UpstreamError,
    UpstreamReady,
)
from slng_fast.providers.registry import ENDPOINTS, ProviderRegistry
from slng_fast.providers.whisper import FINALIZE_SILENCE_S, WhisperDialect

WHISPER = ENDPOINTS["whisper"]
UID = "test-uid"


def dialect() -> WhisperDialect:
    d = WhisperDialect(WHISPER, "ws://whisper.invalid:9090")
    d.open_frames("en", {"uid": UID})
    return d


def seg(start: float, end: float, text: str, completed: bool) -> dict:
    # as WhisperLive formats them: times as strings with three decimals, text with a space
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "text": f" {text}",
            "completed": completed}


def update(*segments: dict, uid: str = UID) -> str:
    return orjson.dumps({"uid": uid, "segments": list(segments)}).decode()


def texts(events) -> list[tuple[str, bool] | str]:
    out: list[tuple[str, bool] | str] = []
    for e in events:
        if isinstance(e, Transcript):
            out.append((e.text, e.is_final))
        elif isinstance(e, FinalTranscript):
            out.append("FINAL")
        elif isinstance(e, Reply):
            out.append("REPLY")
    return out


def send_audio(d: WhisperDialect, seconds: float) -> None:
    d.audio(bytes(int(seconds * 16000) * 4))


# ---- the options message and audio ----------------------------------------------------

def test_registry_builds_the_dialect_from_the_config():
    config = Config(providers={"whisper": ProviderConfig(url="ws://gpu:9090", api_key=None)})
    d = ProviderRegistry(config, environ={}).dialect(WHISPER)
    assert isinstance(d, WhisperDialect)
    assert d.request().url == "ws://gpu:9090" and d.request().headers == ()
    assert d.model_rate == 16000 and d.model_format == "f32" and d.keepalive_interval is None


def test_options_message():
    d = WhisperDialect(WHISPER, "ws://whisper.invalid:9090", "k")
    (frame,) = d.open_frames("en", {"uid": UID})
    assert orjson.loads(frame) == {"uid": UID, "language": "en", "task": "transcribe",
                                   "model": "small", "use_vad": True}
    assert d.request().headers == (("Authorization", "Bearer k"),)


def test_options_pass_whisperlive_extras_and_drop_others():
    d = WhisperDialect(WHISPER, "ws://w")
    (frame,) = d.open_frames(None, {"uid": UID, "model": "tiny.en", "use_vad": False,
                                    "send_last_n_segments": 3, "no_speech_thresh": 0.3,
                                    "task": "translate", "voice_settings": {"x": 1}})
    assert orjson.loads(frame) == {"uid": UID, "language": None, "task": "translate",
                                   "model": "tiny.en", "use_vad": False,
                                   "send_last_n_segments": 3, "no_speech_thresh": 0.3}


def test_uid_without_extras_is_deterministic_and_distinct():
    a, b = WhisperDialect(WHISPER, "ws://w"), WhisperDialect(WHISPER, "ws://w")
    ua = orjson.loads(a.open_frames(None, {})[0])["uid"]
    ub = orjson.loads(b.open_frames(None, {})[0])["uid"]
    assert ua.startswith("slng-fast-") and ub.startswith("slng-fast-") and ua != ub


def test_audio_frames_are_float32_at_16k_through_the_session():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    out = s.receive_text(cmd(type="start", sample_rate=16000, encoding="pcm16", uid=UID), 0.0)
    options = orjson.loads(upstream_frames(out)[0])
    assert options["uid"] == UID and options["task"] == "transcribe"
    pcm = struct.pack("<4h", 0, 16384, -32768, 32767)
    (frame,) = upstream_frames(s.receive_binary(pcm, 0.1))
    assert struct.unpack("<4f", frame) == (0.0, 0.5, -1.0, 32767 / 32768)


def test_8k_mulaw_is_converted_to_16k_float32():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    s.receive_text(cmd(type="start", sample_rate=8000, encoding="mulaw"), 0.0)
    sent = b"".join(f for f in upstream_frames(s.receive_binary(b"\xff" * 1600, 0.1))
                    if isinstance(f, bytes))
    # 200 ms at 8 kHz -> about 200 ms at 16 kHz float32, less the resampler's look-ahead
    assert 11200 <= len(sent) <= 12800 and len(sent) % 4 == 0


# ---- segments -------------------------------------------------------------------------

def test_segments_resent_give_partials_and_finals_without_repetition():
    d = dialect()
    send_audio(d, 6.0)
    steps = [
        (update(seg(0.5, 1.2, "hello", False)), [("hello", False)]),
        (update(seg(0.5, 1.2, "hello", False)), []),  # re-sent unchanged
        (update(seg(0.5, 1.9, "hello world", False)), [("hello world", False)]),
        (update(seg(0.5, 2.0, "hello world", True)), [("hello world", True)]),
        (update(seg(0.5, 2.0, "hello world", True)), []),
        (update(seg(0.5, 2.0, "hello world", True), seg(2.4, 3.0, "one", False)),
         [("one", False)]),
        (update(seg(0.5, 2.0, "hello world", True), seg(2.4, 3.5, "one two", True),
                seg(3.6, 4.0, "three", False)),
         [("one two", True), ("three", False)]),
        # the window slides (send_last_n_segments): old completed segments drop out
        (update(seg(2.4, 3.5, "one two", True), seg(3.6, 4.4, "three", True)),
         [("three", True)]),
    ]
    for frame, expected in steps:
        assert texts(d.receive(frame)) == expected, frame


def test_segments_without_times_are_told_apart_by_text():
    d = dialect()
    frame = orjson.dumps({"uid": UID, "segments": [
        {"text": "a b", "completed": True}, {"text": "c", "completed": False}]}).decode()
    assert texts(d.receive(frame)) == [("a b", True), ("c", False)]
    assert texts(d.receive(frame)) == []


def test_numbers_as_times_are_accepted():
    d = dialect()
    frame = orjson.dumps({"uid": UID, "segments": [
        {"start": 0.0, "end": 1.0, "text": "x", "completed": True}]}).decode()
    assert texts(d.receive(frame)) == [("x", True)]
    assert texts(d.receive(frame)) == []


# ---- finalize -------------------------------------------------------------------------

def test_finalize_sends_silence_and_answers_when_the_tail_completes():
    d = dialect()
    send_audio(d, 3.0)
    d.receive(update(seg(0.5, 2.5, "hello world", False)))
    frames = d.finalize()
    assert all(isinstance(f, bytes) and not any(f) for f in frames)
    assert sum(len(f) for f in frames) == int(FINALIZE_SILENCE_S * 16000) * 4
    assert d.finalize_events() == []  # a segment is pending
    assert texts(d.receive(update(seg(0.5, 2.6, "hello world", False)))) == []
    assert texts(d.receive(update(seg(0.5, 2.7, "hello world again", True)))) == [
        ("hello world again", True), "FINAL"]
    # exactly one: later updates do not answer it again
    assert texts(d.receive(update(seg(0.5, 2.7, "hello world again", True)))) == []


def test_finalize_tops_up_silence_while_the_tail_stays_open():
    d = dialect()
    send_audio(d, 3.0)
    d.finalize()  # nothing heard yet: the server lags behind the audio
    # the server reports speech running into the silence it was sent
    events = d.receive(update(seg(0.5, 3.6, "one two", False)))
    assert texts(events) == [("one two", False), "REPLY"]
    (reply,) = [e for e in events if isinstance(e, Reply)]
    extra = sum(len(f) for f in reply.frames) / 4 / 16000
    assert extra == pytest.approx(0.6, abs=0.01)  # one second after the tail's end
    # bounded: a tail that never ends does not get endless silence
    total = extra
    for end in range(5, 30):
        for e in d.receive(update(seg(0.5, float(end), "one two", False))):
            if isinstance(e, Reply):
                total += sum(len(f) for f in e.frames) / 4 / 16000
    assert total <= 3.0 + 1e-6
    assert texts(d.receive(update(seg(0.5, 4.0, "one two", True)))) == [
        ("one two", True), "FINAL"]


def test_final_comes_before_segments_spoken_after_the_finalize():
    d = dialect()
    send_audio(d, 3.0)
    d.receive(update(seg(0.5, 2.5, "first", False)))
    d.finalize()  # finalize point 3.0 s; 1 s of silence follows
    send_audio(d, 2.0)  # the client speaks again before the answer
    events = d.receive(update(seg(0.5, 2.6, "first", True), seg(4.2, 4.8, "second", True),
                              seg(4.9, 5.0, "third", False)))
    assert texts(events) == [("first", True), "FINAL", ("second", True), ("third", False)]


def test_a_server_behind_the_audio_is_waited_for():
    d = dialect()
    send_audio(d, 6.0)
    d.finalize()  # finalize point 6 s; the server has reported nothing yet
    # the first sentence completes, but the server is still far from the finalize point
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True)))) == [("first", True)]
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True),
                                  seg(3.0, 4.0, "second", False)))) == [("second", False)]
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True),
                                  seg(3.0, 5.5, "second part", True)))) == [
        ("second part", True), "FINAL"]


def test_after_a_long_quiet_the_next_speech_answers_without_finalize_events():
    d = dialect()
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.5, "done", True)))
    send_audio(d, 8.0)
    d.finalize()  # finalize point 10 s; WhisperLive sends nothing for the silence
    send_audio(d, 2.0)
    assert texts(d.receive(update(seg(0.2, 1.5, "done", True),
                                  seg(11.2, 11.8, "next", False)))) == ["FINAL", ("next", False)]


def test_two_finalizes_each_get_one_answer():
    d = dialect()
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.8, "one", False)))
    d.finalize()
    assert texts(d.receive(update(seg(0.2, 1.9, "one", True)))) == [("one", True), "FINAL"]
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.9, "one", True), seg(3.2, 4.5, "two", False)))
    d.finalize()
    assert texts(d.receive(update(seg(0.2, 1.9, "one", True), seg(3.2, 4.6, "two", True)))) == [
        ("two", True), "FINAL"]


def test_finalize_with_nothing_pending():
    d = dialect()
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.5, "done", True)))
    send_audio(d, 2.0)  # 2.5 s of quiet since the server last heard speech
    d.finalize()
    assert texts(d.finalize_events()) == ["FINAL"]
    assert d.finalize_events() == []
    # the later update does not answer it a second time
    assert texts(d.receive(update(seg(0.2, 1.5, "done", True)))) == []


def test_finalize_right_after_speech_waits_for_the_server():
    d = dialect()
    send_audio(d, 1.0)
    d.receive(update(seg(0.2, 0.9, "done", True)))
    d.finalize()  # under QUIET_S since the last speech: it may still be coming
    assert d.finalize_events() == []
    # without finalize_events the answer rides on the next update
    assert texts(d.receive(update(seg(0.2, 0.9, "done", True)))) == ["FINAL"]


def test_session_finalize_gives_one_final_transcript_with_the_segments():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    s.receive_text(cmd(type="start", uid=UID), 0.0)
    for _ in range(6):  # 3 s at 16 kHz pcm16
        s.receive_binary(b"\x00\x00" * 8000, 0.5)
    e = s.upstream_epoch
    assert s.receive_upstream(e, orjson.dumps({"uid": UID, "message": "SERVER_READY",
                                               "backend": "faster_whisper"}).decode(), 0.6) == []
    out = s.receive_upstream(e, update(seg(0.5, 1.5, "hello world", True),
                                       seg(1.6, 2.9, "one two", False)), 1.0)
    assert [(x["text"], x["is_final"]) for x in client_events(out)] == [
        ("hello world", True), ("one two", False)]
    silence = upstream_frames(s.receive_text(cmd(type="finalize"), 1.1))
    assert silence and all(isinstance(f, bytes) and not any(f) for f in silence)
    out = s.receive_upstream(e, update(seg(0.5, 1.5, "hello world", True),
                                       seg(1.6, 3.0, "one two three", True)), 1.2)
    assert types(out) == ["transcript", "final_transcript"]
    final = client_events(out)[-1]
    assert final["text"] == "hello world one two three"
    assert final["audio_duration_seconds"] == pytest.approx(3.0)
    assert s.receive_upstream(e, update(seg(1.6, 3.0, "one two three", True)), 1.3) == []


# ---- statuses -------------------------------------------------------------------------

def test_server_ready_language_and_warning():
    d = dialect()
    (ready,) = d.receive(orjson.dumps({"uid": UID, "message": "SERVER_READY",
                                       "backend": "faster_whisper"}).decode())
    assert ready == UpstreamReady(sample_rate=16000)
    (lang,) = d.receive(orjson.dumps({"uid": UID, "language": "en",
                                      "language_prob": 0.9}).decode())
    assert isinstance(lang, Ignored)
    (warn,) = d.receive(orjson.dumps({"uid": UID, "status": "WARNING",
                                      "message": "reverting to faster_whisper"}).decode())
    assert isinstance(warn, Ignored)
    (other,) = d.receive(update(seg(0, 1, "not ours", True), uid="someone-else"))
    assert isinstance(other, Ignored)


@pytest.mark.parametrize("message, retryable, text", [
    ({"status": "WAIT", "message": 3.5}, True, "full"),
    ({"status": "ERROR", "message": "Failed to load model: huge"}, False, "Failed to load"),
    ({"message": "DISCONNECT"}, True, "ended"),
])
def test_wait_error_disconnect_are_fatal_upstream_errors(message, retryable, text):
    d = dialect()
    (err,) = d.receive(orjson.dumps({"uid": UID, **message}).decode())
    assert isinstance(err, UpstreamError) and err.fatal and err.retryable is retryable
    assert text in err.message


def test_wait_in_a_session_ends_it_with_a_retryable_error():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    s.receive_text(cmd(type="start", uid=UID), 0.0)
    out = s.receive_upstream(s.upstream_epoch, orjson.dumps(
        {"uid": UID, "status": "WAIT", "message": 2.0}).decode(), 0.1)
    assert types(out) == ["error", "session_ended"]
    err = client_events(out)[0]
    # provider_error/1011 today; provider_unavailable/1013 once the session maps
    # UpstreamError.code (a change proposed alongside this dialect)
    assert err["code"] in ("provider_error", "provider_unavailable")
    assert err["retryable"] is True and "full" in err["message"]
    assert close_code(out) in (1011, 1013)


def test_native_mode_relays_frames_unchanged():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    options = orjson.dumps({"uid": "mine", "language": "en", "task": "transcribe",
                            "model": "small", "use_vad": True}).decode()
    out = s.receive_text(options, 0.0)
    assert s.mode == "native" and upstream_frames(out) == [options]
    audio = struct.pack("<2f", 0.25, -0.25)
    assert upstream_frames(s.receive_binary(audio, 0.1)) == [audio]
    back = update(seg(0, 1, "x", True), uid="mine")
    (relayed,) = s.receive_upstream(s.upstream_epoch, back, 0.2)
    assert relayed.frame == back
