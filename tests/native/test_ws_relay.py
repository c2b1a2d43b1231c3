"""The data plane (`AudioRelay.feed`, rust/src/relay.rs) against the session's own path
(`AudioOut.push`, one upstream message at a time) for the same input: every codec and
rate, any chunk size, any cut of the socket reads, and streams that go back and forth
between the planes must give the client the same bytes. The relay stops at the first
message it does not own and leaves it, and everything after it, queued in order."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast.protocol.audio import AudioOut
from slng_fast.vocabulary import RelayFraming

BINARY = RelayFraming("binary")
KYUTAI = RelayFraming("kyutai")

CODECS = ("pcm16", "mulaw", "alaw")
CLIENT_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
PROVIDER_RATES = (16000, 22050, 24000)


def server_frames(*messages: tuple[int, bytes]) -> bytes:
    """What an upstream (a WebSocket server: frames not masked) writes."""
    return b"".join(native.ws_encode_frame(op, payload) for op, payload in messages)


def audio_out(codec: str = "pcm16", rate: int = 24000, max_chunk: int = 4800) -> AudioOut:
    return AudioOut(codec=codec, sample_rate=rate, max_chunk_bytes=max_chunk, context_id="ctx-1")


def binary_audio(payload: bytes) -> bytes:
    return payload


def kyutai_audio(payload: bytes) -> bytes:
    """What a Kyutai TTS dialect makes of a binary message: the float32 samples of an
    ``Audio`` message (little-endian), nothing for any other message."""
    msg = native.msgpack_decode(payload)
    if isinstance(msg, dict) and msg.get("type") == "Audio" and isinstance(msg.get("pcm"), list):
        return np.asarray(msg["pcm"], dtype="<f4").tobytes()
    return b""


def session_path(messages: list[tuple[int, bytes]], in_rate: int, codec: str = "pcm16",
                 rate: int = 24000, max_chunk: int = 4800, *,
                 audio_of: Callable[[bytes], bytes] = binary_audio,
                 in_format: str = "pcm16") -> tuple[bytes, float]:
    """The client's bytes when the session handles every message itself, and the ms."""
    out, client = audio_out(codec, rate, max_chunk), native.WsConnection(1 << 22)
    wire, ms = b"", 0.0
    for op, payload in messages:
        if op == 2:
            frames, got = out.push(audio_of(payload), in_rate, in_format)
            wire += b"".join(client.send_text_utf8(f) for f in frames)
            ms += got
    frames, got = out.end_utterance()
    return wire + b"".join(client.send_text_utf8(f) for f in frames), ms + got


def both_planes(messages: list[tuple[int, bytes]], cuts: list[int], in_rate: int,
                codec: str = "pcm16", rate: int = 24000, max_chunk: int = 4800, *,
                framing: RelayFraming = BINARY, audio_of: Callable[[bytes], bytes] = binary_audio,
                in_format: str = "pcm16") -> tuple[bytes, float, int]:
    """The client's bytes when the data plane holds the stream and hands it back at each
    message it does not own; the session then handles the rest of that read (its
    own path, the same state) and lends the stream again. Also the ms and reports."""
    out, client = audio_out(codec, rate, max_chunk), native.WsConnection(1 << 22)
    upstream = native.WsConnection(1 << 22, client=True)
    relay = out.relay(framing, in_rate, in_format)
    data = server_frames(*messages)
    wire, ms, reported, pos = b"", 0.0, 0, 0
    for cut in [*cuts, len(data)]:
        piece, pos = data[pos:pos + cut], pos + cut
        sent, report, handed_back = relay.feed(upstream, piece, client)
        wire += sent
        ms += out.credit(report.out_bytes)
        reported += report.messages
        assert report.next_sequence == relay.next_sequence
        if handed_back:
            for event in upstream.receive_data(b""):
                if isinstance(event, native.BinaryMessage):
                    frames, got = out.push(audio_of(event.data), in_rate, in_format)
                    wire += b"".join(client.send_text_utf8(f) for f in frames)
                    ms += got
            relay = out.relay(framing, in_rate, in_format)  # lent again
    frames, got = out.end_utterance()
    return wire + b"".join(client.send_text_utf8(f) for f in frames), ms + got, reported


def test_audio_only_matches_the_session_path():
    pcm = [(2, os.urandom(1920)), (2, os.urandom(1921)), (2, os.urandom(9999)), (2, b"")]
    wire, ms, reported = both_planes(pcm, [], 24000)
    assert reported == 4
    assert (wire, ms) == pytest.approx(session_path(pcm, 24000))


def test_stops_at_the_first_other_message_and_keeps_the_rest_in_order():
    a, b = os.urandom(1920), os.urandom(1920)
    data = server_frames((2, a), (1, b'{"type":"flushed"}'), (2, b), (9, b"hi"))
    out = audio_out()
    upstream, client = native.WsConnection(1 << 22, client=True), native.WsConnection(1 << 22)
    wire, report, handed_back = out.relay(BINARY, 24000).feed(upstream, data, client)
    assert handed_back and report.messages == 1 and report.in_bytes == len(a)
    assert wire == b"".join(client.send_text_utf8(f) for f in audio_out().push(a, 24000)[0])
    assert upstream.receive_data(b"") == [native.TextMessage('{"type":"flushed"}'),
                                          native.BinaryMessage(b), native.Ping(b"hi")]


def test_a_protocol_error_is_left_for_the_ordinary_path():
    upstream, client = native.WsConnection(1 << 22, client=True), native.WsConnection(1 << 22)
    masked = native.ws_encode_frame(2, b"xx", True, b"\x05\x06\x07\x08")  # a server must not mask
    wire, report, handed_back = audio_out().relay(BINARY, 24000).feed(upstream, masked, client)
    assert wire == b"" and report.messages == 0 and handed_back
    assert isinstance(upstream.receive_data(b"")[0], native.ProtocolViolation)


def test_after_our_close_the_relay_refuses():
    upstream, client = native.WsConnection(1 << 22, client=True), native.WsConnection(1 << 22)
    client.send_close(1000, "")
    with pytest.raises(native.WsClosedError):
        audio_out().relay(BINARY, 24000).feed(upstream, server_frames((2, b"\0\0")), client)


def test_a_new_provider_rate_goes_on_with_the_sequence():
    out = audio_out()
    first = out.relay(BINARY, 24000)
    first.push(os.urandom(9600))
    second = out.relay(BINARY, 16000)
    assert second is not first and second.next_sequence == first.next_sequence == 2


message = st.one_of(
    st.tuples(st.just(2), st.binary(max_size=3000)),
    st.tuples(st.just(1), st.sampled_from([b'{"type":"flushed"}', b"{}"])),
    st.tuples(st.just(9), st.binary(max_size=8)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(message, max_size=8), st.sampled_from(CODECS), st.sampled_from(CLIENT_RATES),
       st.sampled_from(PROVIDER_RATES), st.integers(2, 4096),
       st.lists(st.integers(1, 5000), max_size=6))
def test_any_stream_any_codec_any_rate_any_cut(messages, codec, rate, in_rate, max_chunk, cuts):
    wire, ms, _ = both_planes(messages, cuts, in_rate, codec, rate, max_chunk)
    expected, expected_ms = session_path(messages, in_rate, codec, rate, max_chunk)
    assert wire == expected
    assert ms == pytest.approx(expected_ms)


float32 = st.binary(max_size=1200).map(  # whole samples in [-1, 1): PCM16 / 32768
    lambda b: (np.frombuffer(b[:len(b) // 2 * 2], "<i2") / 32768).astype("<f4").tobytes())
kyutai_message = st.one_of(
    float32.map(lambda pcm: (2, native.kyutai_audio_frame(pcm))),
    st.sampled_from([{"type": "Text", "text": "hi", "start_s": 0.0, "stop_s": 0.24},
                     {"type": "Audio", "pcm": [0.5, 1]}, {"type": "Ready"},
                     {"type": "Error", "message": "no"}]).map(
        lambda m: (2, native.msgpack_encode(m))),
    st.tuples(st.just(1), st.just(b"{}")),
    st.tuples(st.just(9), st.binary(max_size=8)),
)


def test_kyutai_audio_is_carried_until_a_text_message():
    a, b = (np.linspace(-1, 1, n, dtype="<f4").tobytes() for n in (1920, 777))
    text = native.msgpack_encode({"type": "Text", "text": "hi", "start_s": 0.0, "stop_s": 0.1})
    messages = [(2, native.kyutai_audio_frame(a)), (2, native.kyutai_audio_frame(b)), (2, text),
                (2, native.kyutai_audio_frame(a))]
    for codec, rate in (("pcm16", 24000), ("mulaw", 8000)):
        wire, ms, reported = both_planes(messages, [], 24000, codec, rate, 640, framing=KYUTAI,
                                         audio_of=kyutai_audio, in_format="f32")
        assert reported == 2  # before the Text; the rest of that read is the session's
        assert (wire, ms) == pytest.approx(session_path(
            messages, 24000, codec, rate, 640, audio_of=kyutai_audio, in_format="f32"))


@settings(max_examples=100, deadline=None)
@given(st.lists(kyutai_message, max_size=8), st.sampled_from(CODECS),
       st.sampled_from(CLIENT_RATES), st.integers(2, 4096),
       st.lists(st.integers(1, 3000), max_size=6))
def test_kyutai_any_stream_any_codec_any_rate_any_cut(messages, codec, rate, max_chunk, cuts):
    """Kyutai's MessagePack (float32 at 24 kHz): the data plane owns exactly the ``Audio``
    messages, and the client gets what a session decoding every message would send."""
    wire, ms, reported = both_planes(messages, cuts, 24000, codec, rate, max_chunk,
                                     framing=KYUTAI, audio_of=kyutai_audio, in_format="f32")
    expected, expected_ms = session_path(messages, 24000, codec, rate, max_chunk,
                                         audio_of=kyutai_audio, in_format="f32")
    assert wire == expected
    assert ms == pytest.approx(expected_ms)
    assert reported <= sum(1 for op, m in messages if op == 2 and kyutai_audio(m))


def pieces_by_hand(pieces: list[bytes], in_rate: int, codec: str, rate: int,
                   max_chunk: int) -> list[bytes]:
    """The session path as the separate native pieces compose it: resampler (unless the
    audio is already the client's), G.711 encoder, chunker."""
    width = 1 if codec != "pcm16" else 2
    chunker = native.AudioChunker(max_chunk, width, rate, "ctx-1")
    direct = codec == "pcm16" and in_rate == rate
    resampler = None if direct else native.Resampler(in_rate, rate)
    encode = {"pcm16": bytes, "mulaw": native.pcm16_to_mulaw, "alaw": native.pcm16_to_alaw}[codec]
    frames = []
    for piece in [*pieces, None]:
        pcm = piece if resampler is None else (
            resampler.process(piece) if piece is not None else resampler.flush())
        if pcm:
            frames += chunker.push_frames(encode(pcm))
    return frames


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=2000).map(lambda b: b[:len(b) // 2 * 2]), max_size=6),
       st.sampled_from(CODECS), st.sampled_from(CLIENT_RATES), st.sampled_from(PROVIDER_RATES),
       st.integers(2, 4096))
def test_the_session_path_is_the_pieces_it_is_made_of(pieces, codec, rate, in_rate, max_chunk):
    out = audio_out(codec, rate, max_chunk)
    frames = [f for p in pieces for f in out.push(p, in_rate)[0]] + out.end_utterance()[0]
    assert frames == pieces_by_hand(pieces, in_rate, codec, rate, max_chunk)


def test_the_last_frame_is_kept_only_for_a_seam():
    """A session without a fallback chain never ramps a seam: it keeps no frame (one
    audio frame per live stream, 2.7 KB); with one, the seam ramps from its last sample."""
    plain = AudioOut(codec="pcm16", sample_rate=24000, max_chunk_bytes=4800,
                     context_id="c", seams=False)
    chained = audio_out()
    tone = (1000).to_bytes(2, "little", signed=True) * 2400
    for out in (plain, chained):
        frames, _ = out.push(tone, 24000)
        assert frames
    assert plain._last_frame is None and chained._last_frame is not None
    ramp, _ = chained.seam()
    assert ramp  # the ramp down from the last sample sent
