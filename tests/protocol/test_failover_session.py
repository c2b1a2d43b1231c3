"""Golden transcripts of a TTS session's switch (protocol/tts_failover.py): client and
upstream frames in, actions out, over the real SLNG dialect. No sockets, no clock."""

from __future__ import annotations

import math
import struct

import orjson
from helpers import (
    ORPHEUS,
    PRO,
    client_events,
    closed_upstreams,
    cmd,
    opened,
    types,
    upstream_frames,
)

from slng_fast.errors import GatewayError
from slng_fast.protocol.fallback import Failover
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.slng import SlngDialect

READY = orjson.dumps({"type": "ready", "sample_rate": 24000}).decode()
FLUSHED = orjson.dumps({"type": "flushed"}).decode()
TEXT = "First sentence here. Second one follows. Third ends it."


def resolve(name: str):
    endpoint = ENDPOINTS.get(name)
    if endpoint is None:
        from slng_fast import errors
        raise GatewayError(errors.INVALID_PARAMETER, f"no {name}")
    return endpoint, SlngDialect(endpoint, f"ws://{name}.invalid/")


def make(down=()):
    s = TtsSession(endpoint=ORPHEUS, dialect=SlngDialect(ORPHEUS, "ws://orpheus.invalid/"),
                   tier=PRO, now=0.0)
    s.failover = Failover(resolve, lambda name, now: name in down, first_audio_s=5.0)
    return s


def tone(ms: int) -> bytes:
    n = 24 * ms
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(i / 5)) for i in range(n)))


def test_a_switch_mid_utterance_resends_the_unheard_sentences_after_a_seam():
    s = make()
    (ready,) = client_events(s.receive_text(cmd(type="init", fallback=["kokoro"]), 0.0))
    assert ready["session"]["fallback"] == ["kokoro"]
    first_epoch = s.upstream_epoch
    s.receive_text(cmd(type="input_text", text=TEXT), 0.1)
    s.receive_text(cmd(type="flush"), 0.2)
    s.receive_text(cmd(type="input_text", text="Not flushed yet."), 0.3)
    s.receive_upstream(first_epoch, READY, 0.3)
    chunks = client_events(s.receive_upstream(first_epoch, tone(200), 0.4))
    actions = s.upstream_closed(first_epoch, 0.5, None, None)  # reset mid-utterance
    assert [c.epoch for c in closed_upstreams(actions)] == []  # it is gone already
    events = client_events(actions)
    kinds = [e["type"] for e in events]
    switched = kinds.index("provider_switched")
    assert set(kinds[:switched]) == {"audio_chunk"}  # the seam's ramp first
    assert [e["sequence"] for e in events[:switched]] == list(range(len(chunks), switched + len(chunks)))
    assert events[switched] == {"type": "provider_switched", "from": "orpheus", "to": "kokoro",
                                "reason": "closed", "context_id": s.context_id}
    (open_new,) = opened(actions)
    assert open_new.request.url.startswith("ws://kokoro.invalid/")
    frames = upstream_frames(actions)
    assert orjson.loads(frames[0])["voice"] == "af"  # kokoro's own default voice
    assert frames[1] == "Second one follows. Third ends it."  # 200 ms heard: sentence 1 started
    assert orjson.loads(frames[2]) == {"type": "control", "action": "flush"}
    assert len(frames) == 3  # "Not flushed yet." is held by the dialect until a flush
    assert s.observations[-2:] == [("provider_failed", ("orpheus", "closed")),
                                   ("provider_switched", ("orpheus", "kokoro", "closed"))]
    # the backup's audio goes on with the session's sequence, and the utterance ends once
    s.receive_upstream(s.upstream_epoch, READY, 0.6)
    more = client_events(s.receive_upstream(s.upstream_epoch, tone(100), 0.7))
    assert more[0]["sequence"] == len(chunks) + switched
    done = client_events(s.receive_upstream(s.upstream_epoch, FLUSHED, 0.8))
    assert [e["type"] for e in done] == ["audio_end"] and not done[0]["interrupted"]
    usage = s.provider_usage()
    assert set(usage) == {"orpheus", "kokoro"} and usage["kokoro"]["audio_ms"] == 100.0


def test_first_audio_deadline_switches_and_resends_whole_utterances():
    s = make()
    s.receive_text(cmd(type="init", fallback=["kokoro", "espeak"]), 0.0)
    s.receive_text(cmd(type="input_text", text="One."), 0.1)
    s.receive_text(cmd(type="flush"), 1.0)
    s.receive_text(cmd(type="input_text", text="Two."), 1.1)
    s.receive_text(cmd(type="flush"), 1.2)
    assert s.deadline() == 6.0  # five seconds after the first flush
    actions = s.on_deadline(6.0)
    assert len(closed_upstreams(actions)) == 1
    assert [e["reason"] for e in client_events(actions)] == ["first_audio_timeout"]
    frames = upstream_frames(actions)
    assert frames[1] == "One." and frames[3] == "Two."


def test_no_words_never_arm_the_first_audio_deadline():
    s = make()
    s.receive_text(cmd(type="init", fallback=["kokoro"]), 0.0)
    s.receive_text(cmd(type="input_text", text=" ... "), 0.1)
    s.receive_text(cmd(type="flush"), 0.2)
    s.upstream_connected(s.upstream_epoch, 0.15)
    assert s.deadline() == 0.2 + s.provider_timeout_s  # only the quiet one
    actions = s.on_deadline(0.2 + s.provider_timeout_s)
    assert types(actions) == ["audio_end"]
    assert not [o for o in s.observations if o[0].startswith("provider_")]


def test_a_down_provider_is_skipped_at_the_start_and_a_bad_chain_refused():
    s = make(down={"orpheus"})
    actions = s.receive_text(cmd(type="init", fallback=["kokoro"]), 0.0)
    assert [e["type"] for e in client_events(actions)] == ["ready", "provider_switched"]
    assert opened(actions)[0].request.url.startswith("ws://kokoro.invalid/")
    s = make()
    (err,) = client_events(s.receive_text(cmd(type="init", fallback=["nope"]), 0.0))
    assert err["code"] == "invalid_parameter" and not s.opened


def test_exhausted_chain_is_provider_unavailable_and_1013():
    s = make()
    s.receive_text(cmd(type="init", fallback=["kokoro"]), 0.0)
    s.upstream_failed(s.upstream_epoch, "refused", 0.1, 503)
    actions = s.upstream_failed(s.upstream_epoch, "refused", 0.2, None)
    events = client_events(actions)
    assert [e["type"] for e in events] == ["error", "session_ended"]
    assert events[0]["code"] == "provider_unavailable"
    # a 401 is the provider refusing this request: no switch, answered as without a chain
    s = make()
    s.receive_text(cmd(type="init", fallback=["kokoro"]), 0.0)
    events = client_events(s.upstream_failed(s.upstream_epoch, "401", 0.1, 401))
    assert [e["type"] for e in events] == ["error", "session_ended"]


# -- STT -------------------------------------------------------------------------------

def stt_session_with_a_chain():
    """A PocketSphinx session whose chain entries resolve to unified dialects."""
    from slng_fast.protocol.stt import SttSession
    from slng_fast.providers.unified import UnifiedSttDialect

    def resolve_stt(name):
        endpoint = ENDPOINTS[name]
        return endpoint, UnifiedSttDialect(endpoint, f"ws://{name}.invalid/")

    sphinx = ENDPOINTS["pocketsphinx"]
    s = SttSession(endpoint=sphinx, dialect=UnifiedSttDialect(sphinx, "ws://sphinx.invalid/"),
                   tier=PRO, now=0.0)
    s.failover = Failover(resolve_stt, replay_s=10.0)
    return s


def test_an_stt_switch_replays_the_audio_and_finalizes_not_yet_answered():
    s = stt_session_with_a_chain()
    (ready,) = client_events(s.receive_text(
        cmd(type="start", sample_rate=16000, fallback=["whisper"]), 0.0))
    assert ready["session"] == {"provider": "pocketsphinx", "fallback": ["whisper"]}
    first = s.upstream_epoch
    s.receive_binary(b"\x01\x00" * 1600, 0.1)  # 100 ms, covered by the first final
    s.receive_text(cmd(type="finalize"), 0.2)
    final = orjson.dumps({"type": "final_transcript", "text": "one"}).decode()
    assert [e["type"] for e in client_events(s.receive_upstream(first, final, 0.3))] == [
        "final_transcript"]
    s.receive_binary(b"\x02\x00" * 1600, 0.4)  # 100 ms not yet covered
    s.receive_text(cmd(type="finalize"), 0.5)
    s.receive_binary(b"\x03\x00" * 800, 0.6)  # 50 ms after that finalize
    actions = s.upstream_closed(first, 0.7, 1011, "overloaded")
    assert [e["type"] for e in client_events(actions)] == ["provider_switched"]
    assert opened(actions)[0].request.url == "ws://whisper.invalid/"
    frames = upstream_frames(actions)
    assert orjson.loads(frames[0])["type"] == "start"
    kinds = ["audio" if isinstance(f, bytes) else orjson.loads(f)["type"] for f in frames[1:]]
    at = kinds.index("finalize")
    assert set(kinds[:at]) == {"audio"} and set(kinds[at + 1:]) == {"audio"}
    audio = b"".join(f for f in frames[1:] if isinstance(f, bytes))
    assert b"\x01\x00" * 4 not in audio  # covered by a final: not replayed
    assert audio.count(b"\x02\x00") > 1000 and audio.count(b"\x03\x00") > 300
    answer = s.receive_upstream(s.upstream_epoch, final.replace("one", "two"), 0.8)
    (done,) = client_events(answer)
    assert done["text"] == "two" and done["audio_duration_seconds"] == 0.15


def test_an_stt_switch_after_a_stable_segment_replays_its_audio_too():
    """Audio sent faster than it is spoken: a stable segment covers only its first
    words, and when it ends in the client's audio is not known; the backup hears all the
    audio since the last final transcript, and its final is not the old segment again."""
    s = stt_session_with_a_chain()
    s.receive_text(cmd(type="start", sample_rate=16000, fallback=["whisper"]), 0.0)
    first = s.upstream_epoch
    for n in range(1, 4):  # 3 s of audio, all in within 30 ms
        s.receive_binary(bytes([n, 0]) * 16000, 0.01 * n)
    s.receive_text(cmd(type="finalize"), 0.04)
    segment = orjson.dumps({"type": "transcript", "text": "one two", "is_final": True}).decode()
    assert [e["is_final"] for e in client_events(s.receive_upstream(first, segment, 0.5))] == [
        True]
    actions = s.upstream_closed(first, 0.6, 1011, "overloaded")
    audio = b"".join(f for f in upstream_frames(actions) if isinstance(f, bytes))
    assert [audio.count(bytes([n, 0]) * 4) >= 3000 for n in range(1, 4)] == [True] * 3
    backup = orjson.dumps({"type": "transcript", "text": "one two three", "is_final": True})
    s.receive_upstream(s.upstream_epoch, backup.decode(), 0.8)
    final = orjson.dumps({"type": "final_transcript", "text": ""}).decode()
    (done,) = client_events(s.receive_upstream(s.upstream_epoch, final, 0.9))
    assert done["text"] == "one two three" and done["audio_duration_seconds"] == 3.0
