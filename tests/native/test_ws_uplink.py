"""The STT direction of the data plane (`AudioUplink.feed`, rust/src/uplink.rs) against
the session's own path (`AudioIn.push` then the dialect's ``audio``, one client message at
a time) for the same input: every provider framing (the SLNG family's and the built-in
engine's PCM16, WhisperLive's float32, Kyutai's MessagePack), client codec, client rate,
model rate and cut of the socket reads, with the stream going back and forth between the
planes at every message the uplink does not own, must give the provider the same
messages and leave the dialect and the counts in the same state."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast.protocol.audio import AudioIn
from slng_fast.providers.kyutai import KyutaiDialect
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.unified import UnifiedSttDialect
from slng_fast.providers.whisper import WhisperDialect
from slng_fast.vocabulary import Endpoint, SttDialect

CODECS = ("pcm16", "mulaw", "alaw")
CLIENT_RATES = (8000, 11025, 16000, 22050, 24000, 44100, 48000)
LIMIT = 4000  # the tier's largest audio message, for these tests


def dialect(name: str, model_rate: int = 16000) -> SttDialect:
    if name == "kyutai":
        return KyutaiDialect(ENDPOINTS["kyutai"], "ws://k.invalid")
    if name == "whisper":
        return WhisperDialect(ENDPOINTS["whisper"], "ws://w.invalid")
    endpoint = Endpoint("unified", "stt", "unified", sample_rate=model_rate)
    return UnifiedSttDialect(endpoint, "ws://u.invalid")


def audio_in(d: SttDialect, codec: str, rate: int) -> AudioIn:
    return AudioIn(codec=codec, sample_rate=rate, model_rate=d.model_rate,
                   model_format=d.model_format, framing=d.uplink_framing or "binary",
                   max_message_bytes=LIMIT)


def client_frames(*messages: tuple[int, bytes]) -> bytes:
    """What a client writes: masked frames."""
    return b"".join(native.ws_encode_frame(op, payload, True, b"\x01\x02\x03\x04")
                    for op, payload in messages)


def provider_reads(wire: bytes) -> list[bytes]:
    """The binary messages the upstream reads from our wire bytes."""
    events = native.WsConnection(1 << 24).receive_data(wire)
    assert all(isinstance(e, native.BinaryMessage) for e in events)
    return [e.data for e in events]


def state(d: SttDialect, audio: AudioIn) -> tuple[Any, ...]:
    """What the dialect and the session count of the audio sent."""
    own: tuple[Any, ...] = ()
    if isinstance(d, KyutaiDialect):
        own = (bytes(d._held), d._sent_since_keepalive)
    elif isinstance(d, WhisperDialect):
        own = (d.sent_bytes, d.audio_since_finalize)
    return (*own, audio.received_bytes)


def session_path(messages: list[tuple[int, bytes]], name: str, codec: str, rate: int,
                 model_rate: int) -> tuple[list[bytes], tuple[Any, ...]]:
    """The provider's messages when the session handles every client message itself."""
    d = dialect(name, model_rate)
    audio = audio_in(d, codec, rate)
    frames: list[bytes] = []
    for op, payload in messages:
        if op == 2 and len(payload) <= LIMIT:  # a longer one ends the session
            frames += [f for f in d.audio(audio.push(payload), 0.0) if isinstance(f, bytes)]
    return frames, state(d, audio)


def both_planes(messages: list[tuple[int, bytes]], cuts: list[int], name: str, codec: str,
                rate: int, model_rate: int) -> tuple[list[bytes], tuple[Any, ...], int]:
    """The provider's messages when the data plane holds the client's audio and hands it
    back at each message it does not own; the session then handles the rest of that
    read (its own path, the same state) and lends it again. Also the messages carried."""
    d = dialect(name, model_rate)
    audio = audio_in(d, codec, rate)
    uplink = audio.uplink
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    uplink.set_held(d.lend_held())
    data = client_frames(*messages)
    wire, carried, pos = b"", 0, 0
    for cut in [*cuts, len(data)]:
        piece, pos = data[pos:pos + cut], pos + cut
        sent, report, handed_back = uplink.feed(client, piece, upstream)
        wire += sent
        carried += report.messages
        audio.credit(report.in_bytes)
        d.uplinked(report.out_bytes, report.chunks, 0.0)
        assert report.next_sequence == 0
        if handed_back:
            d.take_held(uplink.take_held())  # the session takes the stream back
            for event in client.receive_data(b""):
                if isinstance(event, native.BinaryMessage) and len(event.data) <= LIMIT:
                    wire += b"".join(upstream.send_binary(f)
                                     for f in d.audio(audio.push(event.data), 0.0)
                                     if isinstance(f, bytes))
            uplink.set_held(d.lend_held())  # lent again
    d.take_held(uplink.take_held())
    return provider_reads(wire), state(d, audio), carried


FRAMINGS = [("unified", 16000), ("unified", 8000), ("unified", 24000), ("whisper", 16000),
            ("kyutai", 24000)]


@pytest.mark.parametrize("name, model_rate", FRAMINGS)
def test_audio_only_matches_the_session_path(name, model_rate):
    pcm = [(2, os.urandom(640)), (2, os.urandom(641)), (2, os.urandom(3999)), (2, b""),
           (2, os.urandom(3200))]
    frames, counted, carried = both_planes(pcm, [], name, "pcm16", 16000, model_rate)
    assert carried == 5
    assert (frames, counted) == session_path(pcm, name, "pcm16", 16000, model_rate)
    assert frames, "audio reached the provider"


def test_stops_at_the_first_other_message_and_keeps_the_rest_in_order():
    a, b, big = os.urandom(640), os.urandom(640), os.urandom(LIMIT + 1)
    data = client_frames((2, a), (1, b'{"type":"finalize"}'), (2, b), (2, big), (9, b"hb"))
    d = dialect("unified")
    audio = audio_in(d, "pcm16", 16000)
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    wire, report, handed_back = audio.uplink.feed(client, data, upstream)
    assert handed_back and report.messages == 1 and report.in_bytes == len(a)
    assert report.out_bytes == len(a) and report.chunks == 1
    assert provider_reads(wire) == [a]
    assert client.receive_data(b"") == [native.TextMessage('{"type":"finalize"}'),
                                        native.BinaryMessage(b), native.BinaryMessage(big),
                                        native.Ping(b"hb")]
    # An audio message over the tier's limit is the session's to refuse.
    wire, report, handed_back = audio.uplink.feed(client, client_frames((2, big)), upstream)
    assert handed_back and report.messages == 0 and wire == b""


def test_after_our_close_the_uplink_refuses():
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    upstream.send_close(1000, "")
    audio = audio_in(dialect("unified"), "pcm16", 16000)
    with pytest.raises(native.WsClosedError):
        audio.uplink.feed(client, client_frames((2, b"\0\0")), upstream)


def test_kyutai_hands_what_it_holds_back_to_the_dialect_and_back():
    d = dialect("kyutai")
    audio = audio_in(d, "pcm16", 24000)
    d.audio(audio.push(os.urandom(1000)), 0.0)  # 500 samples held by the dialect
    uplink = audio.uplink
    uplink.set_held(d.lend_held())
    assert len(uplink.held) == 2000 and not d._held
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    wire, report, _ = uplink.feed(client, client_frames((2, os.urandom(2840))), upstream)
    assert report.chunks == 1 and report.out_bytes == 5680 and uplink.held == b""
    assert native.msgpack_decode(provider_reads(wire)[0])["type"] == "Audio"
    with pytest.raises(native.InvalidArgumentError):
        uplink.set_held(bytes(7680))
    with pytest.raises(native.InvalidArgumentError):
        audio_in(dialect("unified"), "pcm16", 16000).uplink.set_held(b"\0\0")


message = st.one_of(
    st.tuples(st.just(2), st.binary(max_size=2500)),
    st.tuples(st.just(2), st.just(b"\x55" * (LIMIT + 1))),
    st.tuples(st.just(1), st.sampled_from([b'{"type":"finalize"}', b"{}"])),
    st.tuples(st.just(9), st.binary(max_size=8)),
    st.tuples(st.just(10), st.binary(max_size=8)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(message, max_size=10), st.sampled_from(FRAMINGS), st.sampled_from(CODECS),
       st.sampled_from(CLIENT_RATES), st.lists(st.integers(1, 6000), max_size=6))
def test_any_stream_any_framing_codec_rate_and_cut(messages, framing, codec, rate, cuts):
    name, model_rate = framing
    frames, counted, carried = both_planes(messages, cuts, name, codec, rate, model_rate)
    assert (frames, counted) == session_path(messages, name, codec, rate, model_rate)
    owned_at_most = sum(1 for op, p in messages if op == 2 and len(p) <= LIMIT)
    assert carried <= owned_at_most
