"""The native WebSocket frame layer (rust/src/ws/): frames, masking, fragmentation,
control frames, close codes, size limits, UTF-8 and the handshake, checked against a
small pure-Python reference encoder written from RFC 6455."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast._native import (
    BinaryMessage,
    Close,
    InvalidTextMessage,
    Ping,
    Pong,
    ProtocolViolation,
    TextMessage,
    WsConnection,
    ws_encode_frame,
)

FAST = settings(max_examples=300, deadline=None)
MASK = b"\x37\xfa\x21\x3d"


def ref_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None,
              rsv: int = 0) -> bytes:
    """RFC 6455 section 5.2, written out independently of the native encoder."""
    head = bytearray([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head.append(bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(bit | 127)
        head += struct.pack(">Q", n)
    if mask is None:
        return bytes(head) + payload
    head += mask
    return bytes(head) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return ref_frame(opcode, payload, fin, MASK)


def feed_split(conn: WsConnection, data: bytes, cuts: list[int]) -> list[native._WsEvent]:
    events: list[native._WsEvent] = []
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:]):
        events += conn.receive_data(data[a:b])
    return events


def error_code(events: list[native._WsEvent]) -> int | None:
    for event in events:
        if isinstance(event, ProtocolViolation):
            return event.close_code
    return None


# ---- encoding ---------------------------------------------------------------------

@FAST
@given(opcode=st.sampled_from([0, 1, 2, 8, 9, 10]), payload=st.binary(max_size=70_000),
       fin=st.booleans(), mask=st.none() | st.binary(min_size=4, max_size=4))
def test_encoder_matches_reference(opcode, payload, fin, mask):
    assert ws_encode_frame(opcode, payload, fin, mask) == ref_frame(opcode, payload, fin, mask)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 100_000])
def test_server_frames_are_unmasked(size):
    conn = WsConnection(1 << 20)
    assert conn.send_binary(b"x" * size) == ref_frame(2, b"x" * size)
    assert conn.send_text("é" * (size // 2)) == ref_frame(1, ("é" * (size // 2)).encode())


def test_client_frames_are_masked_with_fresh_masks():
    client = WsConnection(client=True)
    frames = [client.send_text("hello world") for _ in range(20)]
    assert all(f[1] == 0x80 | 11 for f in frames)
    assert len({f[2:6] for f in frames}) > 1  # random masks
    server = WsConnection()
    for f in frames:
        assert server.receive_data(f) == [TextMessage("hello world")]
    # A client reads unmasked server frames and refuses masked ones.
    assert client.receive_data(ref_frame(2, b"ab")) == [BinaryMessage(b"ab")]
    assert error_code(client.receive_data(masked(2, b"ab"))) == 1002


# ---- any split gives the same events ----------------------------------------------

messages = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(max_size=300), st.lists(st.integers(0, 300), max_size=4)),
        st.tuples(st.just("binary"), st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=4)),
        st.tuples(st.just("ping"), st.binary(max_size=125), st.just([])),
    ),
    max_size=10,
)


def build(msgs, mask: bytes) -> tuple[bytes, list[native._WsEvent]]:
    """The frames (data fragmented at the cuts, a pong between fragments) and the
    events they must give."""
    out = bytearray()
    expected: list[native._WsEvent] = []
    for kind, value, cuts in msgs:
        if kind == "ping":
            out += ref_frame(9, value, True, mask)
            expected.append(Ping(value))
            continue
        data = value.encode() if kind == "text" else value
        points = sorted(min(c, len(data)) for c in cuts) + [len(data)]
        start = 0
        for i, end in enumerate(points):
            last = i == len(points) - 1
            out += ref_frame((1 if kind == "text" else 2) if i == 0 else 0, data[start:end], last, mask)
            if not last:
                out += ref_frame(10, bytes([i]), True, mask)
                expected.append(Pong(bytes([i])))
            start = end
        expected.append(TextMessage(value) if kind == "text" else BinaryMessage(value))
    return bytes(out), expected


@FAST
@given(msgs=messages, mask=st.binary(min_size=4, max_size=4), cuts=st.lists(st.integers(0, 20_000), max_size=30))
def test_frames_parse_back_in_any_split(msgs, mask, cuts):
    data, expected = build(msgs, mask)
    assert WsConnection().receive_data(data) == expected
    conn = WsConnection()
    assert feed_split(conn, data, cuts) == expected
    assert conn.buffered == 0


@FAST
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=20),
       client=st.booleans(), lenient=st.booleans())
def test_garbage_never_crashes_and_splits_agree(data, cuts, client, lenient):
    whole = WsConnection(300, client=client, lenient_text=lenient).receive_data(data)
    split = feed_split(WsConnection(300, client=client, lenient_text=lenient), data, cuts)
    assert whole == split
    assert not any(isinstance(e, ProtocolViolation) for e in whole[:-1])  # an error is the last event
    try:
        native.ws_parse_request(data)
    except native.WsHandshakeError:
        pass


@FAST
@given(data=st.binary(max_size=500))
def test_random_byte_frames_report_a_valid_close_code(data):
    for event in WsConnection(100).receive_data(masked(2, b"x") + data):
        if isinstance(event, ProtocolViolation):
            assert event.close_code in (1002, 1007, 1009)


# ---- fragmentation, control frames -------------------------------------------------

def test_control_frames_between_fragments():
    text = "zürich €"
    raw = text.encode()
    data = (masked(1, raw[:2], False) + masked(9, b"a") + masked(0, raw[2:9], False)
            + masked(10, b"") + masked(0, raw[9:], True))
    assert WsConnection().receive_data(data) == [Ping(b"a"), Pong(b""), TextMessage(text)]


@pytest.mark.parametrize("data", [
    masked(3, b""),  # reserved data opcode
    masked(11, b""),  # reserved control opcode
    masked(0, b"x"),  # continuation with no message
    masked(1, b"a", False) + masked(2, b"b"),  # new message inside a fragmented one
    masked(9, b"x", False),  # fragmented control frame
    masked(9, b"x" * 126),  # control frame too long
    masked(8, b"\x03"),  # one-byte close payload
    ref_frame(1, b"x"),  # unmasked client frame
    ref_frame(1, b"x", True, MASK, rsv=4),  # RSV1 without an extension
])
def test_protocol_errors_are_1002(data):
    conn = WsConnection()
    events = conn.receive_data(data)
    assert error_code(events) == 1002
    assert conn.failed
    assert conn.receive_data(masked(1, b"later")) == []


# ---- close codes and the close handshake ------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                                  3000, 3999, 4000, 4999])
def test_allowed_close_codes(code):
    conn = WsConnection()
    payload = struct.pack(">H", code) + "bye ✓".encode()
    assert conn.receive_data(masked(8, payload)) == [Close(code, "bye ✓")]
    assert conn.close_received
    assert conn.send_close(code, "bye ✓") == ref_frame(8, payload)
    assert conn.send_close(code) == b""  # one close frame per side


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535])
def test_forbidden_close_codes(code):
    assert error_code(WsConnection().receive_data(masked(8, struct.pack(">H", code)))) == 1002
    if code != 1005:  # 1005 means "no code": an empty close frame
        with pytest.raises(native.InvalidArgumentError):
            WsConnection().send_close(code)


def test_close_without_code():
    conn = WsConnection()
    assert conn.receive_data(masked(8, b"")) == [Close(1005, "")]
    assert conn.send_close(None) == b"\x88\x00"


def test_close_reason_not_utf8_is_1007():
    assert error_code(WsConnection().receive_data(masked(8, b"\x03\xe8\xff"))) == 1007


def test_nothing_is_read_after_the_peers_close():
    conn = WsConnection()
    events = conn.receive_data(masked(8, b"\x03\xe8") + masked(1, b"late"))
    assert events == [Close(1000, "")]
    assert conn.receive_data(masked(1, b"later")) == []


def test_after_our_close_only_reading_goes_on():
    conn = WsConnection()
    frame = conn.send_close(4001, "x" * 200)
    assert len(frame) == 2 + 125  # reason cut to 123 bytes
    assert conn.close_sent
    for send in (lambda: conn.send_text("x"), lambda: conn.send_binary(b"x"),
                 lambda: conn.send_ping(), lambda: conn.send_pong()):
        with pytest.raises(native.WsClosedError):
            send()
    assert conn.receive_data(masked(2, b"x") + masked(8, b"\x0f\xa1")) == [
        BinaryMessage(b"x"), Close(4001, "")]


def test_control_payload_limit_on_send():
    with pytest.raises(native.InvalidArgumentError):
        WsConnection().send_ping(b"x" * 126)
    assert WsConnection().send_pong(b"x" * 125) == ref_frame(10, b"x" * 125)


# ---- size limits --------------------------------------------------------------------

def test_oversize_is_1009_from_the_header():
    conn = WsConnection(1000)
    frame = masked(2, b"x" * 1001)
    assert error_code(conn.receive_data(frame[:8])) == 1009  # before the payload arrives


def test_oversize_across_fragments_is_1009():
    conn = WsConnection(1000)
    assert error_code(conn.receive_data(masked(2, b"x" * 600, False) + masked(0, b"x" * 401))) == 1009
    conn = WsConnection(1000)
    events = conn.receive_data(masked(2, b"x" * 600, False) + masked(0, b"x" * 400))
    assert events == [BinaryMessage(b"x" * 1000)]


def test_huge_declared_length_is_1009():
    frame = b"\x82\xff" + struct.pack(">Q", 2**63 + 5) + MASK
    assert error_code(WsConnection().receive_data(frame)) == 1009


# ---- UTF-8 --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"\xff", b"a\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])
def test_invalid_utf8_is_1007(raw):
    assert error_code(WsConnection().receive_data(masked(1, raw))) == 1007


def test_invalid_utf8_fragment_fails_before_the_message_ends():
    conn = WsConnection()
    assert error_code(conn.receive_data(masked(1, b"ok\xc3\x28", False))) == 1007


def test_a_character_may_straddle_fragments():
    raw = "😀".encode()
    data = b"".join(masked(0 if i else 1, raw[i:i + 1], i == 3) for i in range(4))
    assert WsConnection().receive_data(data) == [TextMessage("😀")]


@FAST
@given(raw=st.binary(max_size=50), cuts=st.lists(st.integers(0, 50), max_size=4))
def test_lenient_text_hands_on_the_bytes(raw, cuts):
    points = sorted(min(c, len(raw)) for c in cuts) + [len(raw)]
    data = b""
    start = 0
    for i, end in enumerate(points):
        data += masked(1 if i == 0 else 0, raw[start:end], i == len(points) - 1)
        start = end
    try:
        expected = [TextMessage(raw.decode())]
    except UnicodeDecodeError:
        expected = [InvalidTextMessage(raw)]
    assert WsConnection(lenient_text=True).receive_data(data + masked(2, b"next")) == expected + [
        BinaryMessage(b"next")]
    strict = WsConnection().receive_data(data)
    assert strict == expected if isinstance(expected[0], TextMessage) else error_code(strict) == 1007


# ---- handshake ----------------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (f"GET /v1/tts?model=x HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Protocol: a, b\r\nAuthorization: Bearer k\xe9\r\n\r\n").encode("latin-1")


def test_accept_key():
    expected = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert native.ws_accept_key(KEY) == expected.decode() == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_upgrade_request_in_any_split():
    for cut in range(len(UPGRADE)):
        assert native.ws_parse_request(UPGRADE[:cut]) is None
    req = native.ws_parse_request(UPGRADE + b"\x81\x80")
    assert req is not None
    assert (req.method, req.path, req.is_websocket, req.key) == ("GET", "/v1/tts?model=x", True, KEY)
    assert req.subprotocols == ["a", "b"]
    assert req.consumed == len(UPGRADE)
    assert req.header("authorization") == "Bearer k\xe9"
    assert ("Host", "h") in req.headers


def test_plain_http_request():
    req = native.ws_parse_request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req is not None and not req.is_websocket and req.path == "/healthz" and req.key is None


@pytest.mark.parametrize(("change", "status"), [
    ((b"Version: 13", b"Version: 8"), 426),
    ((KEY.encode(), b"short"), 400),
    ((b"keep-alive, Upgrade", b"close"), 400),
    ((b"GET", b"PUT"), 405),
    ((b"HTTP/1.1", b"HTTP/1.0"), 400),
])
def test_bad_upgrade_requests(change, status):
    with pytest.raises(native.WsHandshakeError) as info:
        native.ws_parse_request(UPGRADE.replace(*change))
    assert info.value.args[0] == status


def test_request_head_too_large():
    with pytest.raises(native.WsHandshakeError) as info:
        native.ws_parse_request(b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000)
    assert info.value.args[0] == 431


def test_responses():
    ok = native.ws_accept_response(KEY, "b")
    assert ok.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in ok
    assert b"Sec-WebSocket-Protocol: b\r\n" in ok and ok.endswith(b"\r\n\r\n")
    no = native.ws_reject_response(404, b'{"e":1}', [("Content-Type", "application/json")])
    assert no == (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 7\r\nConnection: close\r\n\r\n{\"e\":1}")
    with pytest.raises(native.InvalidArgumentError):
        native.ws_reject_response(400, b"", [("X", "a\r\nInjected: 1")])


# ---- the event classes -------------------------------------------------------------

def test_events_are_frozen_values_matched_by_class():
    events = WsConnection().receive_data(
        masked(1, "hé".encode()) + masked(2, b"\x00") + masked(9, b"p") + masked(10, b"q")
        + masked(8, struct.pack(">H", 4001) + b"bye"))
    assert events == [TextMessage("hé"), BinaryMessage(b"\x00"), Ping(b"p"), Pong(b"q"),
                      Close(4001, "bye")]
    assert events[0] != BinaryMessage(b"h\xc3\xa9") and events[0] != ("text", "hé")
    assert repr(events[4]) == "Close(code=4001, reason='bye')"
    with pytest.raises(AttributeError):
        events[0].data = "other"  # type: ignore[misc]
    seen = []
    for event in events:
        match event:
            case TextMessage(data) | BinaryMessage(data) | Ping(data) | Pong(data):
                seen.append(data)
            case Close(code, reason):
                seen.append((code, reason))
    assert seen == ["hé", b"\x00", b"p", b"q", (4001, "bye")]
    violation = WsConnection().receive_data(ref_frame(2, b"unmasked"))[0]
    assert isinstance(violation, ProtocolViolation) and violation.close_code == 1002
