"""Golden transcripts of the unified TTS session over the SLNG dialect: client frames
and upstream frames in, actions out. No sockets, no clock."""

from __future__ import annotations

import math
import struct

import orjson
import pytest
from helpers import (
    FREE,
    ORPHEUS,
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
from slng_fast.providers.slng import SlngDialect


def make(tier=PRO, defaults=None, rate_limit=None):
    dialect = SlngDialect(ORPHEUS, "ws://model.invalid/ws")
    return TtsSession(endpoint=ORPHEUS, dialect=dialect, tier=tier, now=0.0,
                      defaults=defaults, rate_limit=rate_limit)


def tone(ms: int, rate: int = 24000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


def test_init_sends_ready_with_honest_capabilities_and_opens_upstream():
    s = make()
    actions = s.receive_text(cmd(type="init", voice_id="luna", context_id="c-1"), 0.0)
    (ready,) = client_events(actions)
    assert ready["type"] == "ready" and ready["context_id"] == "c-1"
    assert ready["session"]["provider"] == "orpheus"
    assert ready["session"]["voice_id"] == "luna"
    assert ready["session"]["tier"] == "pro"
    assert ready["session"]["limits"]["max_text_chars"] == 2000
    caps = ready["capabilities"]
    assert caps["supports_stop"] and caps["configure_reconnects"]
    assert caps["voices"] == ["tara", "luna", "stella", "athena", "hera"]
    assert opened(actions)[0].epoch == s.upstream_epoch
    (settings,) = upstream_frames(actions)
    assert orjson.loads(settings)["voice"] == "luna"


def test_text_is_held_until_flush_then_audio_chunks_and_one_audio_end():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    assert upstream_frames(s.receive_text(cmd(type="input_text", text="Hello "), 0.1)) == []
    assert upstream_frames(s.receive_text(cmd(type="input_text", text="world"), 0.2)) == [] 
    frames = upstream_frames(s.receive_text(cmd(type="flush"), 0.3))
    assert frames == ["Hello world", '{"type":"control","action":"flush"}']
    pcm = tone(100)
    out = s.receive_upstream(s.upstream_epoch, pcm, 0.4)
    out += s.receive_upstream(s.upstream_epoch, '{"type":"flushed"}', 0.5)
    events = client_events(out)
    assert [e["type"] for e in events][-1] == "audio_end"
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    assert all(c["context_id"] == s.context_id for c in events)
    end = events[-1]
    assert end["id"] == 1 and end["interrupted"] is False
    # 24 kHz in and out: every sample arrives, none duplicated.
    assert audio_of(out) == pcm
    assert end["total_duration_ms"] == pytest.approx(100, abs=0.05)


def test_audio_is_converted_to_the_session_codec_and_rate():
    s = make()
    s.receive_text(cmd(type="init", codec="mulaw", sample_rate_hz=8000), 0.0)
    s.receive_text(cmd(type="input_text", text="hi"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    out = s.receive_upstream(s.upstream_epoch, tone(200), 0.1)
    out += s.receive_upstream(s.upstream_epoch, '{"type":"flushed"}', 0.2)
    audio = audio_of(out)
    assert abs(len(audio) - 1600) <= 1  # 200 ms at 8 kHz, one byte a sample


def test_chunks_never_exceed_the_tier_audio_chunk():
    s = make(tier=FREE)
    s.receive_text(cmd(type="init", sample_rate_hz=48000), 0.0)
    s.receive_text(cmd(type="input_text", text="hi"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    out = s.receive_upstream(s.upstream_epoch, tone(1000), 0.1)
    sizes = [len(__import__("base64").b64decode(e["data"])) for e in client_events(out)
             if e["type"] == "audio_chunk"]
    assert sizes and max(sizes) <= FREE.max_audio_chunk_bytes


def test_flush_with_nothing_buffered_is_answered_at_once():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    out = s.receive_text(cmd(type="flush"), 0.0)
    assert types(out) == ["audio_end"] and upstream_frames(out) == []
    assert client_events(out)[0]["total_duration_ms"] == 0


def test_stop_closes_upstream_drops_late_audio_and_reopens_lazily():
    s = make()
    s.receive_text(cmd(type="init", voice_id="stella"), 0.0)
    s.receive_text(cmd(type="input_text", text="a long sentence"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    old = s.upstream_epoch
    s.receive_upstream(old, tone(20), 0.1)
    out = s.receive_text(cmd(type="stop"), 0.2)
    assert closed_upstreams(out)[0].epoch == old
    (end,) = client_events(out)
    assert end["type"] == "audio_end" and end["interrupted"] is True and end["id"] == 1
    assert s.receive_upstream(old, tone(20), 0.3) == []  # late audio is dropped
    s.receive_text(cmd(type="input_text", text="next"), 0.4)
    again = s.receive_text(cmd(type="flush"), 0.5)
    (reopen,) = opened(again)
    assert reopen.epoch != old
    settings, text, flush = upstream_frames(again)
    assert orjson.loads(settings)["voice"] == "stella"  # same settings
    assert text == "next"


def test_clear_drops_unflushed_text():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="forget me"), 0.0)
    assert s.receive_text(cmd(type="clear"), 0.0) == []
    s.receive_text(cmd(type="input_text", text="keep"), 0.0)
    assert upstream_frames(s.receive_text(cmd(type="flush"), 0.0))[0] == "keep"


def test_configure_reconnects_with_new_settings_when_idle():
    s = make()
    s.receive_text(cmd(type="init", voice_id="tara"), 0.0)
    out = s.receive_text(cmd(type="configure", voice_id="hera"), 0.0)
    assert closed_upstreams(out)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    frames = upstream_frames(s.receive_text(cmd(type="flush"), 0.0))
    assert orjson.loads(frames[0])["voice"] == "hera"


def test_configure_mid_utterance_waits_for_the_utterance():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    assert closed_upstreams(s.receive_text(cmd(type="configure", voice_id="luna"), 0.0)) == []
    done = s.receive_upstream(s.upstream_epoch, '{"type":"flushed"}', 0.1)
    assert types(done) == ["audio_end"] and closed_upstreams(done)


def test_ping_is_answered_without_upstream_traffic():
    s = make()
    out = s.receive_text(cmd(type="ping"), 12.5)
    assert types(out)[-1] == "pong" and client_events(out)[-1]["timestamp"] == 12.5


def test_first_command_implies_init_with_query_presets():
    s = make(defaults={"voice_id": "athena", "context_id": "from-query"})
    out = s.receive_text(cmd(type="input_text", text="hi"), 0.0)
    ready = client_events(out)[0]
    assert ready["type"] == "ready" and ready["session"]["voice_id"] == "athena"
    assert ready["context_id"] == "from-query"


def test_context_id_is_generated_when_not_given():
    s = make()
    (ready,) = client_events(s.receive_text(cmd(type="init"), 0.0))
    assert len(ready["context_id"]) >= 32


@pytest.mark.parametrize("frame, code", [
    (cmd(type="init"), "already_initialized"),
    (cmd(type="dance"), "unknown_command"),
    (cmd(type="control", action="flush"), "mixed_protocol"),
    (cmd(text="hello"), "mixed_protocol"),
    ("plain text", "mixed_protocol"),
    ("[1, 2]", "invalid_message"),
    (cmd(type="input_text", text=5), "invalid_message"),
    (cmd(type="input_text"), "invalid_message"),
    (cmd(type="configure", voice_id="nobody"), "invalid_parameter"),
    (cmd(type="input_text", text="x" * 2001), "text_too_long"),
])
def test_bad_input_is_a_non_fatal_error(frame, code):
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    out = s.receive_text(frame, 0.0)
    (err,) = client_events(out)
    assert err["type"] == "error" and err["code"] == code and err["retryable"] is False
    assert close_code(out) is None and not s.ended
    # the session still works
    assert types(s.receive_text(cmd(type="ping"), 1.0)) == ["pong"]


@pytest.mark.parametrize("init, code", [
    ({"codec": "opus"}, "invalid_parameter"),
    ({"sample_rate_hz": 12345}, "invalid_parameter"),
    ({"voice_id": "nobody"}, "invalid_parameter"),
    ({"sample_rate_hz": "fast"}, "invalid_message"),
])
def test_bad_init_values(init, code):
    s = make()
    (err,) = client_events(s.receive_text(cmd(type="init", **init), 0.0))
    assert err["code"] == code and not s.opened


def test_legacy_aliases_are_accepted():
    s = make()
    (ready,) = client_events(s.receive_text(
        cmd(type="init", voice="hera", encoding="alaw", sample_rate=16000), 0.0))
    assert ready["session"]["voice_id"] == "hera"
    assert ready["session"]["codec"] == "alaw" and ready["session"]["sample_rate_hz"] == 16000


def test_binary_frame_on_tts_is_invalid_message():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    (err,) = client_events(s.receive_binary(b"\x00\x01", 0.0))
    assert err["code"] == "invalid_message"


def test_oversize_frame_closes_4002_with_error_then_session_ended():
    s = make(tier=FREE)
    s.receive_text(cmd(type="init"), 0.0)
    out = s.receive_text(cmd(type="input_text", text="x" * 17000), 0.0)
    assert types(out) == ["error", "session_ended"]
    assert client_events(out)[0]["code"] == "message_too_large"
    assert close_code(out) == 4002


def test_invalid_utf8_closes_1008():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    out = s.receive_text(b'{"type":"input_text","text":"\xff"}', 0.0)
    assert close_code(out) == 1008


def test_rate_limited_message_is_not_processed_and_session_stays():
    waits = iter([0.0, 0.0, 2.5])
    s = make(rate_limit=lambda now: next(waits))
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="a"), 0.0)
    out = s.receive_text(cmd(type="input_text", text="b"), 0.0)
    (err,) = client_events(out)
    assert err["code"] == "rate_limited" and err["retryable"] is True
    assert err["retry_after_ms"] == 2500
    assert s.usage.characters == 1 and not s.ended


def test_native_mode_relays_frames_both_ways_unchanged():
    s = make(defaults={"voice_id": "tara"})
    out = s.receive_text("Hello world", 0.0)
    assert opened(out) and upstream_frames(out) == ["Hello world"]
    flush = '{"type":"control","action":"flush"}'
    assert upstream_frames(s.receive_text(flush, 0.0)) == [flush]
    pcm = tone(20)
    back = s.receive_upstream(s.upstream_epoch, pcm, 0.1)
    assert [a.frame for a in back] == [pcm]
    flushed = s.receive_upstream(s.upstream_epoch, '{"type":"flushed"}', 0.2)
    assert [a.frame for a in flushed] == ['{"type":"flushed"}']
    # unified commands are just frames in a native session
    assert upstream_frames(s.receive_text(cmd(type="flush"), 0.3)) == ['{"type":"flush"}']


def test_native_mode_refusals_are_close_codes_without_unified_events():
    s = make(tier=FREE)
    s.receive_text("Hello", 0.0)
    out = s.receive_text("x" * 17000, 0.0)
    assert client_events(out) == [] and close_code(out) == 4002


def test_end_sends_session_ended_with_usage():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="four"), 1.0)
    out = s.end("idle_timeout", 2.0)
    (ended,) = client_events(out)
    assert ended["reason"] == "idle_timeout"
    assert ended["usage"]["characters"] == 4 and ended["usage"]["messages"] == 2
    assert ended["usage"]["duration_ms"] == 2000
    assert close_code(out) == 1000 and closed_upstreams(out)
    assert s.end("client_closed", 3.0) == []


def test_upstream_drop_mid_utterance_ends_it_interrupted_with_retryable_error():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    out = s.upstream_closed(s.upstream_epoch, 0.1)
    assert types(out) == ["error", "audio_end"]
    assert client_events(out)[0]["retryable"] is True
    assert client_events(out)[1]["interrupted"] is True
    s.receive_text(cmd(type="input_text", text="y"), 0.2)
    assert opened(s.receive_text(cmd(type="flush"), 0.3))  # reopened lazily


def test_upstream_unreachable_is_provider_unavailable_1013():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    out = s.upstream_failed(s.upstream_epoch, "connection refused", 0.1)
    assert types(out) == ["error", "session_ended"]
    err = client_events(out)[0]
    assert err["code"] == "provider_unavailable" and err["retryable"] is True
    assert close_code(out) == 1013


@pytest.mark.parametrize("extra, code", [
    ({"top_p": 5}, "invalid_parameter"), ({"top_p": 0}, "invalid_parameter"),
    ({"max_tokens": 0}, "invalid_parameter"), ({"buffer_size": 2.5}, "invalid_message"),
    ({"repetition_penalty": 0}, "invalid_parameter"), ({"temperature": -1}, "invalid_parameter"),
    ({"temperature": "hot"}, "invalid_message"),
])
def test_generation_extras_out_of_range_are_refused_before_the_upstream(extra, code):
    s = make()
    out = s.receive_text(cmd(type="init", **extra), 0.0)
    assert [e["code"] for e in client_events(out)] == [code]
    assert not opened(out)
    ok = s.receive_text(cmd(type="init", top_p=0.9, max_tokens=100, repetition_penalty=1.3), 0.0)
    assert types(ok) == ["ready"]


def test_a_provider_quiet_mid_utterance_is_given_up_on_at_the_deadline():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    assert s.deadline() is None  # nothing waits on the provider
    s.receive_text(cmd(type="input_text", text="Hello."), 1.0)
    s.receive_text(cmd(type="flush"), 2.0)
    assert s.deadline() is None  # still connecting: the connect budget bounds that wait
    s.upstream_connected(s.upstream_epoch, 1.5)
    assert s.deadline() == pytest.approx(2.0 + s.provider_timeout_s)
    s.receive_upstream(s.upstream_epoch, tone(40), 5.0)  # audio moves it
    assert s.deadline() == pytest.approx(5.0 + s.provider_timeout_s)
    assert s.on_deadline(10.0) == []  # early: nothing happens
    epoch = s.upstream_epoch
    out = s.on_deadline(5.0 + s.provider_timeout_s)
    events = client_events(out)
    assert [e["type"] for e in events] == ["error", "audio_end"]
    assert events[0]["code"] == "provider_error" and events[0]["retryable"] is True
    assert events[1]["interrupted"] is True
    assert [c.epoch for c in closed_upstreams(out)] == [epoch]
    assert close_code(out) is None and s.deadline() is None  # the session goes on
    # the next flush reopens the upstream and is answered as usual
    s.receive_text(cmd(type="input_text", text="Again."), 20.0)
    again = s.receive_text(cmd(type="flush"), 20.0)
    assert opened(again) and upstream_frames(again)[-1] == '{"type":"control","action":"flush"}'
    assert s.deadline() is None  # the new upstream connects
    s.upstream_connected(epoch, 20.2)  # the old one's word counts for nothing
    assert s.deadline() is None
    s.upstream_connected(s.upstream_epoch, 20.3)  # its silence counts from its open
    assert s.deadline() == pytest.approx(20.3 + s.provider_timeout_s)
    late = s.receive_upstream(epoch, tone(40), 20.5)  # the old upstream's audio is dropped
    assert late == []
    done = s.receive_upstream(s.upstream_epoch, '{"type":"flushed"}', 21.0)
    assert types(done)[-1] == "audio_end" and client_events(done)[-1]["id"] == 2


def test_draining_ends_an_idle_session_at_once_and_a_busy_one_after_its_utterances():
    idle = make()
    idle.receive_text(cmd(type="init"), 0.0)
    out = idle.drain(1.0)
    assert types(out) == ["session_ended"] and close_code(out) == 1001
    assert client_events(out)[0]["reason"] == "server_shutdown"

    busy = make()
    busy.receive_text(cmd(type="init"), 0.0)
    busy.receive_text(cmd(type="input_text", text="Hello."), 0.0)
    busy.receive_text(cmd(type="flush"), 0.0)
    assert busy.drain(1.0) == []  # an utterance is in flight
    out = busy.receive_upstream(busy.upstream_epoch, tone(40), 1.5)
    assert "session_ended" not in types(out)
    out = busy.receive_upstream(busy.upstream_epoch, '{"type":"flushed"}', 2.0)
    assert types(out)[-2:] == ["audio_end", "session_ended"] and close_code(out) == 1001


REFUSED_COMMANDS = [
    '{"type":"input_text","text":"\\udfff"}',  # a lone surrogate escape
    '{"text":"\\ud800 x","type":"input_text"}',  # the type after the refused value
    '{"type":"init","style":' + "[" * 70 + "]" * 70 + "}",  # nested deeper than 64
    '{"type":"init","voice_id":"tara","buffer_size":' + "9" * 700 + "}",  # a huge integer
]


@pytest.mark.parametrize("frame", REFUSED_COMMANDS)
def test_a_refused_first_command_keeps_the_session_unified(frame):
    """The classifier refuses the frame, but its `type` names a unified command: the
    client speaks the unified protocol, so it gets `invalid_message`, not a relay."""
    s = make()
    out = s.receive_text(frame, 0.0)
    (err,) = client_events(out)
    assert err["type"] == "error" and err["code"] == "invalid_message"
    assert s.mode == "unified" and not opened(out) and upstream_frames(out) == []
    assert close_code(out) is None and not s.ended
    assert types(s.receive_text(cmd(type="init"), 1.0)) == ["ready"]


@pytest.mark.parametrize("frame", [
    '{"text":"\\udfff"}',  # a provider's own message
    '{"type":"Speak","text":"\\udfff"}',
    '[' * 70 + ']' * 70,
])
def test_a_refused_first_frame_that_names_no_unified_command_is_still_native(frame):
    s = make(defaults={"voice_id": "tara"})
    out = s.receive_text(frame, 0.0)
    assert s.mode == "native" and client_events(out) == [] and upstream_frames(out) == [frame]


@pytest.mark.parametrize("init", [
    '{"type":"init","buffer_size":1' + "0" * 30 + "}",
    '{"type":"init","style":{"stability":[1' + "0" * 30 + "]}}",
    '{"type":"init","model_id":-1' + "0" * 30 + "}",
])
def test_an_integer_beyond_64_bits_for_the_provider_is_invalid_parameter(init):
    """Values passed through to the provider must be JSON it can be sent: an integer
    beyond 64 bits is refused at once, not a gateway fault when the upstream opens."""
    s = make()
    out = s.receive_text(init, 0.0)
    (err,) = client_events(out)
    assert err["code"] == "invalid_parameter" and close_code(out) is None and not s.opened
    assert types(s.receive_text(cmd(type="init"), 1.0)) == ["ready"]


def test_a_rate_limited_first_command_still_makes_the_session_unified():
    """Found by the live fuzzer: the refused `init` got a unified `rate_limited` error,
    but the mode stayed undecided, so a binary frame next made the session native and
    the provider's own frames reached a unified client."""
    waits = iter([2.0, 0.0, 0.0])
    s = make(rate_limit=lambda now: next(waits))
    (err,) = client_events(s.receive_text(cmd(type="init"), 0.0))
    assert err["code"] == "rate_limited" and s.mode == "unified" and not s.opened
    out = s.receive_binary(b"\x00\x01", 0.1)
    assert [e["code"] for e in client_events(out)] == ["invalid_message"]
    assert not opened(out) and upstream_frames(out) == [] and s.mode == "unified"
    assert types(s.receive_text(cmd(type="init"), 3.0)) == ["ready"]


def test_prewarm_designs_every_rate_pair_a_session_can_ask_for():
    """Serving processes design all filters at start (off the loop): every pair of the
    rates the unified protocol accepts, TTS and STT, in both directions."""
    from slng_fast.protocol.audio import prewarm_resamplers
    from slng_fast.protocol.commands import STT_SAMPLE_RATES, TTS_SAMPLE_RATES

    rates = set(TTS_SAMPLE_RATES) | set(STT_SAMPLE_RATES)
    assert prewarm_resamplers() == len(rates) * (len(rates) - 1)
