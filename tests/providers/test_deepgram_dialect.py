"""Golden transcripts of the unified TTS session over the Deepgram dialect: client frames
and Deepgram frames in, actions out. No sockets, no clock."""

from __future__ import annotations

import base64
import math
import struct
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from slng_fast.config import DEFAULT_TIERS
from slng_fast.protocol.actions import CloseUpstream, OpenUpstream, SendClient, SendUpstream
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.deepgram import MAX_SPEAK_CHARS, DeepgramDialect, close_error, split_text
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.vocabulary import (
    Audio,
    Ignored,
    Settings,
    UpstreamError,
    UpstreamReady,
    UtteranceDone,
)

PRO = DEFAULT_TIERS["pro"]
DEEPGRAM = ENDPOINTS["deepgram"]
BASE = "wss://api.deepgram.com"
KEY = "dg-secret"

METADATA = orjson.dumps({"type": "Metadata", "request_id": "r-1", "model_name": "aura-asteria-en",
                         "model_version": "1", "model_uuid": "u-1"}).decode()
FLUSHED = '{"type":"Flushed","sequence_id":0}'
CLEARED = '{"type":"Cleared","sequence_id":0}'


def make(defaults=None, url=BASE):
    dialect = DeepgramDialect(DEEPGRAM, url, KEY)
    return TtsSession(endpoint=DEEPGRAM, dialect=dialect, tier=PRO, now=0.0, defaults=defaults)


def cmd(**fields) -> str:
    return orjson.dumps(fields).decode()


def events(actions) -> list[dict]:
    return [orjson.loads(a.frame) for a in actions
            if isinstance(a, SendClient) and (isinstance(a.frame, str) or a.text)]


def types(actions) -> list[str]:
    return [e["type"] for e in events(actions)]


def upstream(actions) -> list:
    return [a.frame for a in actions if isinstance(a, SendUpstream)]


def opened(actions) -> list[OpenUpstream]:
    return [a for a in actions if isinstance(a, OpenUpstream)]


def closed(actions) -> list[CloseUpstream]:
    return [a for a in actions if isinstance(a, CloseUpstream)]


def audio_of(actions) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in events(actions) if e["type"] == "audio_chunk")


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def tone(ms: int, rate: int) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


def speak(text: str) -> str:
    return orjson.dumps({"type": "Speak", "text": text}).decode()


# -- capabilities and the request ---------------------------------------------------------

def test_capabilities_are_declared_honestly():
    s = make()
    (ready,) = events(s.receive_text(cmd(type="init"), 0.0))
    caps = ready["capabilities"]
    assert caps["supports_stop"] is True and caps["supports_clear"] is True
    assert caps["supports_configure"] is True and caps["configure_reconnects"] is True
    assert caps["word_timestamps"] is False
    dialect = s.dialect
    assert dialect.stop_by_reconnect is False
    assert dialect.keepalive_interval is None and dialect.keepalive() == []
    assert ready["session"]["voice_id"] == "aura-asteria-en"


def test_init_opens_the_speak_url_with_the_token_header_and_no_first_frame():
    s = make()
    actions = s.receive_text(cmd(type="init"), 0.0)
    (op,) = opened(actions)
    parts = urlsplit(op.request.url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/speak")
    assert query(op.request.url) == {"model": "aura-asteria-en", "encoding": "linear16",
                                     "sample_rate": "24000"}
    assert op.request.headers == (("Authorization", f"Token {KEY}"),)
    assert upstream(actions) == []  # settings are query parameters


@pytest.mark.parametrize("client_rate, asked", [
    (8000, 8000), (16000, 16000), (24000, 24000), (32000, 32000), (48000, 48000),
    (22050, 24000), (44100, 24000),
])
def test_prefer_output_asks_for_the_client_rate_when_deepgram_has_it(client_rate, asked):
    s = make()
    (op,) = opened(s.receive_text(cmd(type="init", sample_rate_hz=client_rate), 0.0))
    assert query(op.request.url)["sample_rate"] == str(asked)
    assert query(op.request.url)["encoding"] == "linear16"
    assert s.dialect.sample_rate == asked


def test_voice_id_is_the_model_and_extras_go_in_the_query():
    s = make(defaults={"voice_id": "aura-2-thalia-en"})
    (op,) = opened(s.receive_text(cmd(type="init", speed=1.2, mip_opt_out=True), 0.0))
    q = query(op.request.url)
    assert q["model"] == "aura-2-thalia-en"
    assert q["speed"] == "1.2" and q["mip_opt_out"] == "true"


@pytest.mark.parametrize("url", ["ws://127.0.0.1:4321", "ws://127.0.0.1:4321/",
                                 "ws://127.0.0.1:4321/v1/speak"])
def test_the_base_url_may_be_an_emulator_or_a_full_speak_url(url):
    d = DeepgramDialect(DEEPGRAM, url, None)
    req = d.request(Settings(voice_id="aura-luna-en"))
    assert req.url.startswith("ws://127.0.0.1:4321/v1/speak?model=aura-luna-en&")
    assert req.headers == ()  # no credential, no header


# -- text, flush, audio ---------------------------------------------------------------------

def test_text_is_held_until_flush_then_speak_and_flush():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    assert upstream(s.receive_text(cmd(type="input_text", text="Hello "), 0.0)) == []
    assert upstream(s.receive_text(cmd(type="input_text", text="world."), 0.0)) == []
    frames = upstream(s.receive_text(cmd(type="flush"), 0.0))
    assert frames == [speak("Hello world."), '{"type":"Flush"}']


def test_long_text_is_cut_into_speak_messages_deepgram_accepts():
    text = ("word " * 1000).strip()  # 4,999 characters
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert all(len(p) <= MAX_SPEAK_CHARS for p in pieces) and len(pieces) == 3
    assert all(p.endswith(" ") for p in pieces[:-1])  # cut between words
    assert split_text("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]
    d = DeepgramDialect(DEEPGRAM, BASE, KEY)
    d.input_text(text)
    frames = d.flush()
    assert [orjson.loads(f)["type"] for f in frames] == ["Speak", "Speak", "Speak", "Flush"]


def test_binary_is_audio_at_the_requested_rate_and_flushed_ends_the_utterance():
    s = make()
    s.receive_text(cmd(type="init", sample_rate_hz=16000), 0.0)
    assert types(s.receive_upstream(s.upstream_epoch, METADATA, 0.0)) == []
    s.receive_text(cmd(type="input_text", text="hi"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    pcm = tone(100, 16000)
    out = s.receive_upstream(s.upstream_epoch, pcm[:1000], 0.1)
    out += s.receive_upstream(s.upstream_epoch, pcm[1000:], 0.1)
    out += s.receive_upstream(s.upstream_epoch, FLUSHED, 0.2)
    assert types(out)[-1] == "audio_end"
    end = events(out)[-1]
    assert end["id"] == 1 and end["interrupted"] is False
    assert end["total_duration_ms"] == pytest.approx(100, abs=0.05)
    assert audio_of(out) == pcm  # 16 kHz asked of Deepgram and given to the client


def test_dialect_events():
    d = DeepgramDialect(DEEPGRAM, BASE, KEY)
    d.prefer_output(48000)
    assert d.receive(METADATA) == [UpstreamReady(sample_rate=48000)]
    assert d.receive(b"\x01\x00\x02\x00") == [Audio(b"\x01\x00\x02\x00", 48000)]
    assert d.receive(b"") == []
    assert d.receive(FLUSHED) == [UtteranceDone()]
    assert isinstance(d.receive("not json")[0], Ignored)
    assert isinstance(d.receive("[1]")[0], Ignored)
    assert isinstance(d.receive('{"type":"Something"}')[0], Ignored)


def test_two_utterances_end_in_order():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    for text in ("one", "two"):
        s.receive_text(cmd(type="input_text", text=text), 0.0)
        s.receive_text(cmd(type="flush"), 0.0)
    out = s.receive_upstream(s.upstream_epoch, tone(20, 24000), 0.1)
    out += s.receive_upstream(s.upstream_epoch, FLUSHED, 0.1)
    out += s.receive_upstream(s.upstream_epoch, tone(20, 24000), 0.1)
    out += s.receive_upstream(s.upstream_epoch, '{"type":"Flushed","sequence_id":1}', 0.1)
    assert [e["id"] for e in events(out) if e["type"] == "audio_end"] == [1, 2]


# -- stop and clear -----------------------------------------------------------------------------

def test_stop_sends_clear_and_drops_late_audio_until_cleared():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="a long sentence"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    epoch = s.upstream_epoch
    s.receive_upstream(epoch, tone(20, 24000), 0.1)
    out = s.receive_text(cmd(type="stop"), 0.2)
    assert upstream(out) == ['{"type":"Clear"}']
    assert closed(out) == [] and opened(out) == []  # the socket stays
    (end,) = events(out)
    assert end["type"] == "audio_end" and end["interrupted"] is True and end["id"] == 1
    # The next utterance starts at once, on the same socket.
    s.receive_text(cmd(type="input_text", text="next"), 0.3)
    frames = upstream(s.receive_text(cmd(type="flush"), 0.3))
    assert frames == [speak("next"), '{"type":"Flush"}']
    # What Deepgram still sends for the cleared flush is swallowed, Flushed included.
    assert s.receive_upstream(epoch, tone(20, 24000), 0.4) == []
    assert s.receive_upstream(epoch, FLUSHED, 0.4) == []
    assert s.receive_upstream(epoch, CLEARED, 0.4) == []
    # After Cleared: the new utterance's audio and Flushed count.
    pcm = tone(40, 24000)
    out = s.receive_upstream(epoch, pcm, 0.5) + s.receive_upstream(epoch, FLUSHED, 0.5)
    assert audio_of(out) == pcm
    (end2,) = [e for e in events(out) if e["type"] == "audio_end"]
    assert end2["id"] == 2 and end2["interrupted"] is False


def test_stop_with_nothing_in_flight_sends_nothing():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    assert upstream(s.receive_text(cmd(type="stop"), 0.0)) == []
    s.receive_text(cmd(type="input_text", text="unflushed"), 0.0)
    out = s.receive_text(cmd(type="stop"), 0.0)
    assert upstream(out) == [] and types(out) == ["audio_end"]
    assert events(out)[0]["interrupted"] is True


def test_two_stops_need_two_cleared():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    e = s.upstream_epoch
    for text in ("first", "second"):
        s.receive_text(cmd(type="input_text", text=text), 0.0)
        s.receive_text(cmd(type="flush"), 0.0)
        assert upstream(s.receive_text(cmd(type="stop"), 0.0)) == ['{"type":"Clear"}']
    s.receive_text(cmd(type="input_text", text="third"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    assert s.receive_upstream(e, CLEARED, 0.1) == []
    assert s.receive_upstream(e, tone(20, 24000), 0.1) == []  # still the second's audio
    assert s.receive_upstream(e, CLEARED, 0.1) == []
    out = s.receive_upstream(e, tone(20, 24000), 0.2) + s.receive_upstream(e, FLUSHED, 0.2)
    assert [x["id"] for x in events(out) if x["type"] == "audio_end"] == [3]


def test_clear_drops_unflushed_text_without_upstream_traffic():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="forget me"), 0.0)
    assert s.receive_text(cmd(type="clear"), 0.0) == []
    s.receive_text(cmd(type="input_text", text="keep"), 0.0)
    assert upstream(s.receive_text(cmd(type="flush"), 0.0))[0] == speak("keep")


def test_a_new_socket_forgets_an_outstanding_clear():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    s.receive_text(cmd(type="stop"), 0.0)
    s.upstream_closed(s.upstream_epoch, 1.0)  # Deepgram went away before Cleared
    s.receive_text(cmd(type="input_text", text="y"), 2.0)
    again = s.receive_text(cmd(type="flush"), 2.0)
    assert len(opened(again)) == 1
    pcm = tone(20, 24000)
    out = s.receive_upstream(s.upstream_epoch, pcm, 2.1)
    out += s.receive_upstream(s.upstream_epoch, FLUSHED, 2.1)
    assert audio_of(out) == pcm and types(out)[-1] == "audio_end"


# -- configure --------------------------------------------------------------------------------

def test_configure_reconnects_with_the_new_model_in_the_url():
    s = make()
    s.receive_text(cmd(type="init", voice_id="aura-asteria-en", sample_rate_hz=16000), 0.0)
    old = s.upstream_epoch
    out = s.receive_text(cmd(type="configure", voice_id="aura-orion-en"), 0.0)
    assert [c.epoch for c in closed(out)] == [old] and upstream(out) == []
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    again = s.receive_text(cmd(type="flush"), 0.0)
    (op,) = opened(again)
    q = query(op.request.url)
    assert q["model"] == "aura-orion-en" and q["sample_rate"] == "16000"
    assert upstream(again) == [speak("x"), '{"type":"Flush"}']


def test_configure_mid_utterance_waits_for_flushed():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    assert closed(s.receive_text(cmd(type="configure", voice_id="aura-luna-en"), 0.0)) == []
    done = s.receive_upstream(s.upstream_epoch, FLUSHED, 0.1)
    assert types(done) == ["audio_end"] and closed(done)


def test_an_idle_upstream_drop_is_unseen_and_reopened_at_the_next_flush():
    s = make()
    s.receive_text(cmd(type="init", voice_id="aura-hera-en"), 0.0)
    assert s.upstream_closed(s.upstream_epoch, 30.0) == []
    s.receive_text(cmd(type="input_text", text="later"), 60.0)
    again = s.receive_text(cmd(type="flush"), 60.0)
    (op,) = opened(again)
    assert query(op.request.url)["model"] == "aura-hera-en"


# -- errors -----------------------------------------------------------------------------------

def test_warning_is_a_non_fatal_provider_error():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    s.receive_text(cmd(type="input_text", text="x"), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    warning = cmd(type="Warning", description="Flush limit exceeded; wait 60 seconds",
                  code="FLUSH_LIMIT_EXCEEDED")
    out = s.receive_upstream(s.upstream_epoch, warning, 0.1)
    (err,) = events(out)
    assert err["type"] == "error" and err["code"] == "provider_error"
    assert "FLUSH_LIMIT_EXCEEDED" in err["message"] and err["retryable"] is True
    assert not s.ended


def test_warning_and_error_mapping():
    d = DeepgramDialect(DEEPGRAM, BASE, KEY)
    (w,) = d.receive(cmd(type="Warning", description="Unknown model option", code="BAD_OPTION"))
    assert isinstance(w, UpstreamError) and not w.retryable and not w.fatal
    (r,) = d.receive(cmd(type="Warning", description="Too many characters per minute",
                         code="RATE_LIMITED"))
    assert r.retryable
    (e,) = d.receive(cmd(type="Error", err_code="INVALID_INPUT", err_msg="bad text"))
    assert isinstance(e, UpstreamError) and "bad text" in e.message and not e.retryable


@pytest.mark.parametrize("code, reason, retryable", [
    (1003, "MESSAGE-0000", False),
    (1008, "DATA-0000", False),
    (1008, "DATA-0001", False),
    (1009, "BIG-0000", False),
    (1011, "NET-0000", True),
    (1011, "NET-0001", True),
])
def test_error_close_codes_map_to_provider_errors(code, reason, retryable):
    d = DeepgramDialect(DEEPGRAM, BASE, KEY)
    err = d.close_error(code, reason)
    assert isinstance(err, UpstreamError) and err.retryable is retryable
    assert reason in err.message and str(code) in err.message


@pytest.mark.parametrize("code, reason", [(1000, ""), (1000, "bye"), (1001, ""), (1006, None),
                                          (None, None)])
def test_normal_closes_are_not_errors(code, reason):
    assert close_error(code, reason) is None


# -- native and passthrough ----------------------------------------------------------------------

def test_native_mode_opens_the_same_speak_url_and_relays_frames_unchanged():
    s = make(defaults={"voice_id": "aura-luna-en"})
    first = speak("Hello there.")
    out = s.receive_text(first, 0.0)
    (op,) = opened(out)
    assert urlsplit(op.request.url).path == "/v1/speak"
    assert query(op.request.url) == {"model": "aura-luna-en", "encoding": "linear16",
                                     "sample_rate": "24000"}
    assert op.request.headers == (("Authorization", f"Token {KEY}"),)
    assert upstream(out) == [first]
    assert upstream(s.receive_text('{"type":"Flush"}', 0.1)) == ['{"type":"Flush"}']
    e = s.upstream_epoch
    for frame in (METADATA, b"\x00\x01" * 240, FLUSHED, CLEARED):
        (sent,) = s.receive_upstream(e, frame, 0.2)
        assert isinstance(sent, SendClient) and sent.frame == frame
    assert s.usage.audio_ms == pytest.approx(10.0)


def test_passthrough_request_puts_the_sdk_path_and_query_on_the_base_url():
    d = DeepgramDialect(DEEPGRAM, "ws://127.0.0.1:9999/", "provider-key")
    req = d.passthrough_request("/v1/speak", "model=aura-2-thalia-en&encoding=linear16"
                                "&sample_rate=48000&api_key=gateway-secret", "provider-key")
    assert req.url == ("ws://127.0.0.1:9999/v1/speak?model=aura-2-thalia-en"
                       "&encoding=linear16&sample_rate=48000")
    assert req.headers == (("Authorization", "Token provider-key"),)
    assert d.sample_rate == 48000
    bare = d.passthrough_request("v1/speak", "", None)
    assert bare.url == "ws://127.0.0.1:9999/v1/speak" and bare.headers == ()
    for bad in ("/v1/listen", "/v1/speak/", "/v1/speak%2F..%2Fprojects", "/v1/projects"):
        with pytest.raises(ValueError):
            d.passthrough_request(bad, "", "k")


def test_a_flush_refused_over_the_limit_is_answered_by_the_next_flushed():
    s = make()
    s.receive_text(cmd(type="init"), 0.0)
    e = s.upstream_epoch
    for text in ("one", "two"):
        s.receive_text(cmd(type="input_text", text=text), 0.0)
        s.receive_text(cmd(type="flush"), 0.0)
    warning = cmd(type="Warning", code="FLUSH_LIMIT_EXCEEDED",
                  description="At most 20 Flush messages are processed every 60 seconds")
    (err,) = events(s.receive_upstream(e, warning, 0.1))
    assert err["type"] == "error" and err["retryable"] is True
    out = s.receive_upstream(e, tone(40, 24000), 0.2) + s.receive_upstream(e, FLUSHED, 0.2)
    ends = [x for x in events(out) if x["type"] == "audio_end"]
    assert [x["id"] for x in ends] == [1, 2] and not any(x["interrupted"] for x in ends)
    # Counting is right again afterwards.
    s.receive_text(cmd(type="input_text", text="three"), 0.3)
    s.receive_text(cmd(type="flush"), 0.3)
    out = s.receive_upstream(e, FLUSHED, 0.4)
    assert [x["id"] for x in events(out) if x["type"] == "audio_end"] == [3]
