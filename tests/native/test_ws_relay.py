"""`ws_relay_audio` against the pieces it fuses: the upstream's `receive_data`, the
chunker's `push_frames` and the client's text framing must give the same bytes, and
the relay must stop at the first event that is not binary audio, leaving it and every
later one (audio included) for the ordinary path, in order."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native

MASK = b"\x05\x06\x07\x08"


def server_frames(*messages: tuple[int, bytes]) -> bytes:
    """What an upstream (a WebSocket server: frames not masked) writes."""
    return b"".join(native.ws_encode_frame(op, payload) for op, payload in messages)


def fresh(max_chunk: int = 4800):
    upstream = native.WsConnection(1 << 22, client=True)
    chunker = native.AudioChunker(max_chunk, 2, 24000, "ctx-1")
    client = native.WsConnection(1 << 22)
    return upstream, chunker, client


def by_hand(pcm_messages: list[bytes], max_chunk: int = 4800) -> bytes:
    _, chunker, client = fresh(max_chunk)
    return b"".join(client.send_text_utf8(frame) for pcm in pcm_messages
                    for frame in chunker.push_frames(pcm))


def test_audio_only_matches_the_pieces():
    pcm = [os.urandom(1920), os.urandom(1921), os.urandom(9999), b""]
    upstream, chunker, client = fresh()
    out, relayed, rest = native.ws_relay_audio(upstream, server_frames(*[(2, p) for p in pcm]),
                                               chunker, client)
    assert rest == []
    assert relayed == sum(map(len, pcm))
    assert out == by_hand(pcm)


def test_stops_at_the_first_other_event_and_keeps_the_rest_in_order():
    a, b = os.urandom(1920), os.urandom(1920)
    data = server_frames((2, a), (1, b'{"type":"flushed"}'), (2, b), (9, b"hi"))
    upstream, chunker, client = fresh()
    out, relayed, rest = native.ws_relay_audio(upstream, data, chunker, client)
    assert out == by_hand([a]) and relayed == len(a)
    assert rest == [native.TextMessage('{"type":"flushed"}'), native.BinaryMessage(b), native.Ping(b"hi")]


def test_a_frame_split_across_reads():
    pcm = os.urandom(4000)
    data = server_frames((2, pcm))
    upstream, chunker, client = fresh()
    out1, n1, rest1 = native.ws_relay_audio(upstream, data[:1000], chunker, client)
    assert (out1, n1, rest1) == (b"", 0, [])
    out2, n2, rest2 = native.ws_relay_audio(upstream, data[1000:], chunker, client)
    assert rest2 == [] and n2 == len(pcm) and out2 == by_hand([pcm])


def test_a_protocol_error_is_left_for_the_ordinary_path():
    upstream, chunker, client = fresh()
    masked = native.ws_encode_frame(2, b"xx", True, MASK)  # a server must not mask
    out, relayed, rest = native.ws_relay_audio(upstream, masked, chunker, client)
    assert out == b"" and relayed == 0
    assert rest and isinstance(rest[0], native.ProtocolViolation)


def test_after_our_close_the_relay_refuses():
    upstream, chunker, client = fresh()
    client.send_close(1000, "")
    with pytest.raises(native.WsClosedError):
        native.ws_relay_audio(upstream, server_frames((2, b"\0\0")), chunker, client)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.integers(2, 4096),
       st.lists(st.integers(1, 5000), max_size=6))
def test_any_audio_any_cut(pcm, max_chunk, cuts):
    data = server_frames(*[(2, p) for p in pcm])
    upstream, chunker, client = fresh(max_chunk)
    out, total, pos = b"", 0, 0
    for cut in cuts + [len(data)]:
        piece, pos = data[pos:pos + cut], pos + cut
        o, n, rest = native.ws_relay_audio(upstream, piece, chunker, client)
        assert rest == []
        out, total = out + o, total + n
    assert total == sum(map(len, pcm))
    assert out == by_hand(pcm, max_chunk)
