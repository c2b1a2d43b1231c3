"""serve_native_websocket over real sockets on 127.0.0.1, checked with independent
clients: trio-websocket, websockets, websocket-client, and a raw client that writes
frames by hand (fragments, bad frames, invalid UTF-8, oversize)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
import trio_websocket

from slng_fast import _native as native
from slng_fast.gateway.native_transport import (
    NativeIncomingRequest,
    open_native_upstream,
    serve_native_websocket,
)
from slng_fast.gateway.transport import ConnectionClosed, IncomingRequest, MessageTooLarge

MAX = 64 * 1024
MASK = b"\x01\x02\x03\x04"


@dataclass
class Seen:
    messages: list[str | bytes] = field(default_factory=list)
    closed: list[tuple[int | None, str | None]] = field(default_factory=list)
    requests: list[IncomingRequest] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)


async def echo_handler(request: IncomingRequest, seen: Seen) -> None:
    seen.requests.append(request)
    assert isinstance(request, NativeIncomingRequest)
    if not request.is_websocket:
        if request.path == "/healthz":
            await request.reject(200, b'{"status":"ok"}')
        elif request.path == "/metrics":
            await request.reject(200, b"up 1\n")
        else:
            await request.reject(404, b'{"error":"not_found"}')
        return
    if request.path == "/refuse":
        await request.reject(403, b'{"error":"forbidden"}')
        return
    conn = await request.accept(request.subprotocols[0] if request.subprotocols else None)
    try:
        while True:
            message = await conn.receive()
            seen.messages.append(message)
            if isinstance(message, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in message):
                await conn.close(1008, "invalid_utf8")  # what the session does
            elif message == "server-ping":
                await conn.ping()
                await conn.send("pong-ok")
            elif isinstance(message, str) and message.startswith("close:"):
                await conn.close(int(message[6:]), "bye")
            else:
                await conn.send(message)
    except ConnectionClosed as exc:
        seen.closed.append((exc.code, exc.reason))
    except MessageTooLarge as exc:  # the session's answer would be an error and 4002
        seen.closed.append((1009, exc.reason))
        raise
    finally:
        seen.done.set()


@pytest.fixture
async def server(nursery):
    seen = Seen()

    async def handler(request: IncomingRequest) -> None:
        await echo_handler(request, seen)

    port = await nursery.start(lambda task_status: serve_native_websocket(
        handler, "127.0.0.1", 0, max_message_bytes=MAX, task_status=task_status))
    return port, seen


# ---- trio-websocket ------------------------------------------------------------------

async def test_trio_websocket_echo_ping_and_close(server, nursery):
    port, seen = server
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/v1/x?y=1", use_ssl=False,
                                                subprotocols=["proto-a", "proto-b"])
    assert ws.subprotocol == "proto-a"
    await ws.send_message("héllo")
    assert await ws.get_message() == "héllo"
    await ws.send_message(b"\x00" * 6400)
    assert await ws.get_message() == b"\x00" * 6400
    await ws.ping(b"abcd")  # answered by the transport's reader
    await ws.send_message("server-ping")  # the handler's ping() returns on our pong
    assert await ws.get_message() == "pong-ok"
    await ws.aclose(4000, "done")
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed == [(4000, "done")]
    assert seen.requests[0].path == "/v1/x?y=1"
    assert seen.requests[0].header("sec-websocket-protocol") == "proto-a, proto-b"


async def test_server_close_code_reaches_the_client(server, nursery):
    port, seen = server
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/", use_ssl=False)
    await ws.send_message("close:4001")
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await ws.get_message()
    assert (info.value.reason.code, info.value.reason.reason) == (4001, "bye")
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed[0][0] == 4001


async def test_reject_before_accept(server):
    port, _ = server

    def refused() -> tuple[int, bytes]:
        import websocket

        try:
            websocket.create_connection(f"ws://127.0.0.1:{port}/refuse", timeout=5)
        except websocket.WebSocketBadStatusException as exc:
            return exc.status_code, exc.resp_body
        raise AssertionError("accepted")

    assert await trio.to_thread.run_sync(refused) == (403, b'{"error":"forbidden"}')


# ---- websockets (sync client in a thread) -------------------------------------------

def _websockets_client(port: int) -> tuple[list, int | None, str | None]:
    from websockets.exceptions import ConnectionClosed as WsClosed
    from websockets.sync.client import connect

    out: list = []
    with connect(f"ws://127.0.0.1:{port}/w", max_size=None, compression=None) as ws:
        ws.send("text ✓")
        out.append(ws.recv())
        ws.send(bytes(range(256)) * 100)
        out.append(ws.recv())
        ws.send(["frag", "mented ", "text"])  # an iterable is sent as fragments
        out.append(ws.recv())
        ws.send([b"ab", b"cd"])
        out.append(ws.recv())
        ws.ping(b"p").wait(5)
        ws.send(b"x" * (MAX + 1))  # over the transport's limit
        try:
            ws.recv()
        except WsClosed as exc:
            assert exc.rcvd is not None
            return out, exc.rcvd.code, exc.rcvd.reason
    return out, None, None


async def test_websockets_client(server):
    port, seen = server
    out, code, _ = await trio.to_thread.run_sync(_websockets_client, port)
    assert out == ["text ✓", bytes(range(256)) * 100, "fragmented text", b"abcd"]
    assert code == 1009
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed[0][0] == 1009


# ---- websocket-client (sync, in a thread) --------------------------------------------

def _websocket_client(port: int) -> tuple[list, int]:
    import websocket

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/wc", subprotocols=["s1"])
    out = [ws.subprotocol]
    ws.send("hi")
    out.append(ws.recv())
    ws.send_binary(b"\x01\x02")
    out.append(ws.recv())
    # Fragments by hand, a ping in between.
    ws.send_frame(websocket.ABNF.create_frame("par", websocket.ABNF.OPCODE_TEXT, fin=0))
    ws.ping("x")
    ws.send_frame(websocket.ABNF.create_frame("ts", websocket.ABNF.OPCODE_CONT, fin=1))
    opcode, frame = ws.recv_data_frame(control_frame=True)
    out.append((opcode, frame.data))
    out.append(ws.recv())
    ws.send("close:4002")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    code = struct.unpack(">H", frame.data[:2])[0]
    ws.close()
    return out, code


async def test_websocket_client(server):
    port, _ = server
    out, code = await trio.to_thread.run_sync(_websocket_client, port)
    assert out == ["s1", "hi", b"\x01\x02", (0xA, b"x"), "parts"]
    assert code == 4002


# ---- a raw client ---------------------------------------------------------------------

class Raw:
    """A TCP client that writes frames by hand and reads with the native client codec."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = native.WsConnection(1 << 22, client=True)
        self.events: list[tuple] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/raw", extra: bytes = b"") -> Raw:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + extra)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert f"Sec-WebSocket-Accept: {native.ws_accept_key(key)}".encode() in head
        raw = cls(stream)
        raw.events += raw.ws.receive_data(rest)
        return raw

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def next(self) -> native._WsEvent | None:
        """The next event, or None at the end of the stream."""
        with trio.fail_after(5):
            while not self.events:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.events += self.ws.receive_data(data)
        return self.events.pop(0)

    async def eof(self) -> bool:
        with trio.fail_after(5):
            while True:
                if not await self.stream.receive_some(65536):
                    return True


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return native.ws_encode_frame(opcode, payload, fin, MASK)


async def test_raw_fragments_with_interleaved_control_frames(server):
    port, seen = server
    raw = await Raw.connect(port, extra=frame(1, b"first"))  # frames right after the head
    assert await raw.next() == native.TextMessage("first")
    text = "fragmented €".encode()
    await raw.send(frame(1, text[:11], False), frame(9, b"ping!"), frame(0, text[11:12], False),
                   frame(10, b"unsolicited"), frame(0, text[12:], True))
    assert await raw.next() == native.Pong(b"ping!")
    assert await raw.next() == native.TextMessage("fragmented €")
    big = bytes(range(256)) * 200
    await raw.send(frame(2, big[:1], False), frame(0, big[1:30000], False), frame(0, big[30000:], True))
    assert await raw.next() == native.BinaryMessage(big)
    await raw.send(raw.ws.send_close(1000, "ok"))
    assert await raw.next() == native.Close(1000, "ok")
    assert await raw.eof()  # the server closes TCP after the handshake
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed == [(1000, "ok")]


async def test_raw_invalid_utf8_reaches_the_handler_as_surrogates(server):
    port, seen = server
    raw = await Raw.connect(port)
    bad = b"ok \xff\xfe \xc3"
    await raw.send(frame(1, bad[:4], False), frame(0, bad[4:], True))
    assert await raw.next() == native.Close(1008, "invalid_utf8")
    assert seen.messages == [bad.decode("utf-8", "surrogateescape")]
    assert "\udcff" in seen.messages[0]  # lone surrogates, for the session's classifier


async def test_raw_oversize_is_1009(server):
    port, seen = server
    raw = await Raw.connect(port)
    await raw.send(frame(2, b"x" * (MAX // 2), False), frame(0, b"x" * (MAX // 2 + 1), True))
    event = await raw.next()
    assert isinstance(event, native.Close) and event.code == 1009
    assert await raw.eof()
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed[0][0] == 1009
    assert seen.messages == []


@pytest.mark.parametrize(("data", "code"), [
    (native.ws_encode_frame(1, b"unmasked", True, None), 1002),
    (frame(9, b"x" * 126), 1002),
    (frame(0, b"lonely continuation"), 1002),
    (frame(8, struct.pack(">H", 1005)), 1002),
    (frame(8, b"\x03\xe8\xff"), 1007),
])
async def test_raw_protocol_errors_close_with_their_code(server, data, code):
    port, seen = server
    raw = await Raw.connect(port)
    await raw.send(data)
    event = await raw.next()
    assert isinstance(event, native.Close) and event.code == code
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed[0][0] == code


async def test_peer_vanishing_is_1006(server):
    port, seen = server
    raw = await Raw.connect(port)
    await raw.send(frame(1, b"x"))
    assert await raw.next() == native.TextMessage("x")
    await raw.stream.aclose()
    with trio.fail_after(5):
        await seen.done.wait()
    assert seen.closed[0][0] == 1006


# ---- plain HTTP and bad handshakes ---------------------------------------------------

async def http(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request)
    out = b""
    with trio.fail_after(5):
        while data := await stream.receive_some(65536):
            out += data
    await stream.aclose()
    return out


async def test_plain_http_reaches_the_handler(server):
    port, seen = server
    # Header names as h11 writes them (lower case); Connection: close, else the
    # connection is kept alive for the next request.
    out = await http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: application/json\r\n" in out and out.endswith(b'\r\n\r\n{"status":"ok"}')
    assert seen.requests[-1].is_websocket is False  # type: ignore[attr-defined]
    out = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"content-type: text/plain; charset=utf-8\r\n" in out and out.endswith(b"\r\n\r\nup 1\n")
    out = await http(port, b"GET /nothing HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")


async def test_plain_http_with_another_client(server):
    import urllib.request

    port, _ = server

    def get() -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read()

    assert await trio.to_thread.run_sync(get) == (200, b'{"status":"ok"}')


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", b"426"),
    (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: nope\r\nSec-WebSocket-Version: 13\r\n\r\n", b"400"),
    (b"\x16\x03\x01 not http at all\r\n\r\n", b"400"),
])
async def test_bad_handshakes_never_reach_the_handler(server, request_bytes, status):
    port, seen = server
    out = await http(port, request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status)
    assert seen.requests == []


async def test_many_connections_at_once(server, nursery):
    port, _ = server
    results: list[bytes] = []

    async def one(i: int) -> None:
        ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/", use_ssl=False)
        for j in range(20):
            await ws.send_message(f"{i}:{j}".encode())
            results.append(await ws.get_message())
        await ws.aclose()

    async with trio.open_nursery() as inner:
        for i in range(20):
            inner.start_soon(one, i)
    assert sorted(results) == sorted(f"{i}:{j}".encode() for i in range(20) for j in range(20))



async def test_a_few_requests_are_answered_at_once_the_rest_wait_their_turn(nursery):
    """At most ``answering_at_once`` WebSocket requests are in the handler before it
    answers them: a burst of handshakes is answered a few at a time (its transient
    objects fragmented the heap), each turn given back by an accept, a reject or the
    handler's return, in the order the requests came."""
    inside: list[str] = []
    answer = {path: trio.Event() for path in ("/a", "/b", "/c", "/d")}

    async def handler(request: IncomingRequest) -> None:
        inside.append(request.path)
        await answer[request.path].wait()
        if request.path == "/a":
            conn = await request.accept(None)
            await conn.send("hello")
            await trio.sleep_forever()
        elif request.path == "/b":
            await request.reject(403, b'{"error":"forbidden"}')
        # "/c" returns without answering (the server answers 500)

    port = await nursery.start(lambda task_status: serve_native_websocket(
        handler, "127.0.0.1", 0, answering_at_once=2, task_status=task_status))

    async def client(path: str) -> None:
        try:
            ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, path,
                                                        use_ssl=False)
            await ws.get_message()
        except trio_websocket.HandshakeError:
            pass

    for path in ("/a", "/b", "/c", "/d"):
        nursery.start_soon(client, path)
        await trio.testing.wait_all_tasks_blocked(0.05)
    assert inside == ["/a", "/b"]  # two turns: /c and /d wait, their heads read
    answer["/a"].set()  # accepted: its turn goes to /c
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert inside == ["/a", "/b", "/c"]
    answer["/c"].set()  # returned unanswered: its turn goes to /d
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert inside == ["/a", "/b", "/c", "/d"]
    answer["/b"].set()
    answer["/d"].set()


# ---- teardown ------------------------------------------------------------------------

async def test_a_reader_cancelled_from_outside_still_ends_the_connection(server):
    """A session's teardown cancels its upstream's reader (the link's nursery) while the
    link is closing that upstream. The reader must still mark the connection ended, or
    the close waits its whole timeout for a close frame nobody is left to read (every
    such session then ended, and wrote its usage row, seconds late)."""
    port, _ = server
    async with trio.open_nursery() as link:
        conn = await open_native_upstream(f"ws://127.0.0.1:{port}/", [], [], link)
        await conn.send("hello")
        assert await conn.receive() == "hello"
        link.cancel_scope.cancel()  # the reader is cancelled while it waits to read
    closed = trio.Event()

    async def close() -> None:
        await conn.close(1000, "")
        closed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        assert closed.is_set(), "close() waits for a reader that is gone"
