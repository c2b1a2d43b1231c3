"""Golden transcripts of the WhisperLive dialect, alone and inside the unified STT session.
No sockets."""

from __future__ import annotations

import math
import struct

import orjson
import pytest

from protocol.helpers import PRO, client_events, close_code, cmd, types, upstream_frames
from slng_fast.config import Config, ProviderConfig
from slng_fast.protocol.stt import SttSession
from slng_fast.providers.registry import ENDPOINTS, ProviderRegistry
from slng_fast.providers.whisper import FINALIZE_GRACE_S, FINALIZE_SILENCE_S, WhisperDialect
from slng_fast.vocabulary import (
    FinalTranscript,
    Ignored,
    Reply,
    Transcript,
    UpstreamError,
    UpstreamReady,
)

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


def send_audio(d: WhisperDialect, seconds: float, now: float = 0.0) -> None:
    """``seconds`` of audio in one frame at ``now``."""
    d.audio(bytes(int(seconds * 16000) * 4), now)


def send_paced(d: WhisperDialect, seconds: float, start: float, *,
               speed: float = 1.0) -> float:
    """``seconds`` of audio in 20 ms frames from ``start``, ``speed`` times real time
    (``math.inf``: all at ``start``); the time the last frame went."""
    now = start
    for i in range(round(seconds / 0.02)):
        now = start + i * 0.02 / speed
        d.audio(bytes(320 * 4), now)
    return now


def seconds_of(frames) -> float:
    return sum(len(f) for f in frames) / 4 / 16000


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
    frames = d.finalize(3.0)
    assert all(isinstance(f, bytes) and not any(f) for f in frames)
    assert sum(len(f) for f in frames) == int(FINALIZE_SILENCE_S * 16000) * 4
    assert texts(d.receive(update(seg(0.5, 2.6, "hello world", False)))) == []
    assert texts(d.receive(update(seg(0.5, 2.7, "hello world again", True)))) == [
        ("hello world again", True), "FINAL"]
    # exactly one: later updates and the deadline do not answer it again
    assert texts(d.receive(update(seg(0.5, 2.7, "hello world again", True)))) == []
    assert d.deadline() is None and d.on_deadline(100.0) == []


def test_finalize_tops_up_silence_while_the_tail_stays_open():
    d = dialect()
    send_audio(d, 3.0)
    d.finalize(0.1)  # nothing heard yet: the server lags behind the audio
    # the server reports speech running into the silence it was sent
    events = d.receive(update(seg(0.5, 3.6, "one two", False)))
    assert texts(events) == [("one two", False), "REPLY"]
    (reply,) = [e for e in events if isinstance(e, Reply)]
    extra = seconds_of(reply.frames)
    assert extra == pytest.approx(0.6, abs=0.01)  # one second after the tail's end
    # bounded: a tail that never ends does not get endless silence
    total = extra
    for end in range(5, 30):
        for e in d.receive(update(seg(0.5, float(end), "one two", False))):
            if isinstance(e, Reply):
                total += seconds_of(e.frames)
    assert total <= 3.0 + 1e-6
    assert texts(d.receive(update(seg(0.5, 4.0, "one two", True)))) == [
        ("one two", True), "FINAL"]


def test_final_comes_before_segments_spoken_after_the_finalize():
    d = dialect()
    send_audio(d, 3.0)
    d.receive(update(seg(0.5, 2.5, "first", False)))
    d.finalize(3.0)  # finalize point 3.0 s; 1 s of silence follows
    send_audio(d, 2.0, 3.5)  # the client speaks again before the answer
    events = d.receive(update(seg(0.5, 2.6, "first", True), seg(4.2, 4.8, "second", True),
                              seg(4.9, 5.0, "third", False)))
    assert texts(events) == [("first", True), "FINAL", ("second", True), ("third", False)]


def test_a_server_behind_the_audio_is_waited_for():
    d = dialect()
    send_audio(d, 6.0)
    d.finalize(0.1)  # finalize point 6 s; the server has reported nothing yet
    # the first sentence completes, but the server is still far from the finalize point
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True)))) == [("first", True)]
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True),
                                  seg(3.0, 4.0, "second", False)))) == [("second", False)]
    assert texts(d.receive(update(seg(0.5, 2.0, "first", True),
                                  seg(3.0, 5.5, "second part", True)))) == [
        ("second part", True), "FINAL"]


def test_after_a_long_quiet_the_next_speech_answers_the_finalize():
    d = dialect()
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.5, "done", True)))
    send_audio(d, 8.0, 2.0)
    d.finalize(10.0)  # finalize point 10 s; WhisperLive sends nothing for the silence
    send_audio(d, 2.0, 10.5)
    assert texts(d.receive(update(seg(0.2, 1.5, "done", True),
                                  seg(11.2, 11.8, "next", False)))) == ["FINAL", ("next", False)]


def test_two_finalizes_each_get_one_answer():
    d = dialect()
    send_audio(d, 2.0)
    d.receive(update(seg(0.2, 1.8, "one", False)))
    d.finalize(2.0)
    assert texts(d.receive(update(seg(0.2, 1.9, "one", True)))) == [("one", True), "FINAL"]
    send_audio(d, 2.0, 3.0)
    d.receive(update(seg(0.2, 1.9, "one", True), seg(3.2, 4.5, "two", False)))
    d.finalize(5.0)
    assert texts(d.receive(update(seg(0.2, 1.9, "one", True), seg(3.2, 4.6, "two", True)))) == [
        ("two", True), "FINAL"]


def test_finalize_right_after_speech_is_answered_by_the_next_update():
    d = dialect()
    send_audio(d, 1.0)
    d.receive(update(seg(0.2, 0.9, "done", True)))
    d.finalize(1.0)  # under QUIET_S since the last speech: it may still be coming
    assert texts(d.receive(update(seg(0.2, 0.9, "done", True)))) == ["FINAL"]


# ---- the finalize deadline (time passed in) -----------------------------------------------

def test_audio_faster_than_real_time_is_not_answered_before_the_server_hears_it():
    """The bug: 5.5 s sent in a tenth of a second, then finalize. The server has reported
    nothing yet; that is not silence."""
    d = dialect()
    last = send_paced(d, 5.5, 0.0, speed=55)
    assert d.finalize(last) != []
    # a real-time server has heard it all 5.5 s after the first frame, and the finalize's
    # second of silence one second later; then the grace
    assert d.deadline() == pytest.approx(5.5 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)
    assert d.on_deadline(last) == []
    assert texts(d.receive(update(seg(0.5, 1.8, "please open the", False)))) == [
        ("please open the", False)]
    assert texts(d.receive(update(seg(0.5, 2.0, "please open the door", True)))) == [
        ("please open the door", True)]  # 2 s is more than QUIET_S before the 5.5 s point
    assert texts(d.receive(update(seg(0.5, 2.0, "please open the door", True),
                                  seg(2.5, 4.2, "one two three four five", True)))) == [
        ("one two three four five", True), "FINAL"]


def test_the_deadline_answers_when_the_speech_ended_long_before_the_finalize():
    d = dialect()
    send_audio(d, 6.0, 0.0)  # 2 s of speech, then 4 s of quiet, all at once
    d.finalize(0.05)
    deadline = d.deadline()
    assert deadline == pytest.approx(6.0 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)
    assert texts(d.receive(update(seg(0.3, 1.9, "hello there", True)))) == [
        ("hello there", True)]  # heard, but nothing says the server got to 6 s yet
    assert d.on_deadline(deadline - 0.01) == []
    assert d.deadline() == deadline
    assert texts(d.on_deadline(deadline)) == ["FINAL"]
    assert d.deadline() is None and d.on_deadline(deadline + 1) == []
    # the answer is not given again by a later update
    assert texts(d.receive(update(seg(0.3, 1.9, "hello there", True)))) == []


def test_real_time_audio_with_nothing_pending_waits_only_for_silence_and_grace():
    d = dialect()
    last = send_paced(d, 2.0, 0.0)
    d.receive(update(seg(0.2, 1.5, "done", True)))
    last = send_paced(d, 2.0, last + 0.02)  # 2.5 s of quiet since the last speech heard
    d.finalize(last + 0.02)
    assert d.deadline() == pytest.approx(last + 0.02 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)
    assert texts(d.on_deadline(d.deadline())) == ["FINAL"]


def test_after_a_pause_the_bound_counts_from_when_the_audio_came():
    """A client that streamed, paused, then sent a file fast: the server cannot have heard
    the file before it came, whatever the stream's age."""
    d = dialect()
    send_paced(d, 2.0, 0.0)
    send_paced(d, 4.0, 60.0, speed=math.inf)
    d.finalize(60.0)
    assert d.deadline() == pytest.approx(60.0 + 4.0 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)


def test_an_open_tail_is_waited_for_past_the_deadline():
    d = dialect()
    send_audio(d, 6.0)
    d.finalize(0.0)
    d.receive(update(seg(0.5, 2.0, "still", False)))
    assert d.on_deadline(100.0) == []  # the tail began before the finalize point
    assert d.deadline() is None  # nothing left for time to settle
    # completed far before the finalize point: only the passed deadline lets it answer
    assert texts(d.receive(update(seg(0.5, 2.1, "still here", True)))) == [
        ("still here", True), "FINAL"]


def test_a_finalize_with_no_new_audio_is_answered_at_once_in_order():
    d = dialect()
    assert d.finalize(0.5) == []  # nothing sent at all: no silence either
    assert d.deadline() == 0.5
    assert texts(d.on_deadline(0.5)) == ["FINAL"]
    send_audio(d, 3.0, 1.0)
    d.receive(update(seg(0.5, 2.5, "words", False)))
    assert d.finalize(1.1) != []
    assert d.finalize(1.2) == []  # no audio since the previous finalize
    # the second waits behind the first, which waits for its tail
    assert d.on_deadline(1.2) == []
    assert texts(d.on_deadline(100.0)) == []
    assert texts(d.receive(update(seg(0.5, 2.6, "words", True)))) == [
        ("words", True), "FINAL", "FINAL"]


def test_the_session_passes_the_deadline_on():
    d = WhisperDialect(WHISPER, "ws://w")
    s = SttSession(endpoint=WHISPER, dialect=d, tier=PRO, now=0.0)
    assert s.deadline() is None  # not started
    s.receive_text(cmd(type="start", uid=UID), 0.0)
    for _ in range(6):  # 3 s at 16 kHz pcm16, all at once
        s.receive_binary(b"\x00\x00" * 8000, 0.1)
    assert s.deadline() is None
    s.receive_text(cmd(type="finalize"), 0.2)
    deadline = s.deadline()
    assert deadline == pytest.approx(0.1 + 3.0 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)
    assert s.on_deadline(deadline - 0.5) == []
    out = s.on_deadline(deadline)
    assert types(out) == ["final_transcript"]
    assert client_events(out)[0]["audio_duration_seconds"] == pytest.approx(3.0)
    assert s.deadline() is None and s.on_deadline(deadline + 1) == []
    s.receive_text(cmd(type="finalize"), 9.0)
    s.end("client_closed", 9.1)
    assert s.deadline() is None and s.on_deadline(9.2) == []  # ended: nothing more


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
