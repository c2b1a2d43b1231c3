"""Upstreams that misbehave on purpose, for the tests of what the gateway does when a
provider stalls, reads slowly or never: real sockets on 127.0.0.1, the WebSocket
handshake done by hand so that nothing reads the socket behind the test's back."""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Awaitable, Callable

import trio

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def client_frame(opcode: int, payload: bytes, *, declared: int | None = None) -> bytes:
    """One masked frame (zero mask), as a client sends it; ``declared`` overrides the
    length in the header (a frame that says it is longer than what follows)."""
    n = len(payload) if declared is None else declared
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


async def accept_handshake(stream: trio.SocketStream) -> bytes:
    """Read a WebSocket upgrade request and accept it; the bytes read after its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise trio.BrokenResourceError("closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return rest


async def serve_raw_upstream(nursery: trio.Nursery,
                             behave: Callable[[trio.SocketStream], Awaitable[None]],
                             *, receive_buffer: int | None = None) -> str:
    """Serve every connection with ``behave(stream)`` after the handshake; the ws:// URL."""

    async def on_stream(stream: trio.SocketStream) -> None:
        try:
            await accept_handshake(stream)
            await behave(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    listener = trio.SocketListener(sock)
    nursery.start_soon(trio.serve_listeners, on_stream, [listener])
    return f"ws://127.0.0.1:{sock.getsockname()[1]}/"


async def stalled_stt_upstream(stream: trio.SocketStream) -> None:
    """A unified STT upstream that says it is ready, then never reads again."""
    await stream.send_all(server_frame(0x1, b'{"type":"ready","sample_rate":16000}'))
    await trio.sleep_forever()


async def deaf_tts_upstream(stream: trio.SocketStream) -> None:
    """An SLNG-dialect TTS upstream that says it is ready, then reads and drops everything,
    close frames included: it never answers a close (as a busy model server may not)."""
    await stream.send_all(server_frame(0x1, b'{"type":"ready","sample_rate":22050}'))
    while await stream.receive_some(65536):
        pass
    await trio.sleep_forever()


def bursting_tts_upstream(frames: int, size: int = 1920):
    """An SLNG-dialect TTS upstream that answers each flush with ``frames`` frames of
    PCM16 (24 kHz) in one write, then ``flushed``: a model that runs far ahead of real
    time. The frames count up, so the order of what the client gets can be checked."""

    async def behave(stream: trio.SocketStream) -> None:
        from slng_fast import _native

        await stream.send_all(server_frame(0x1, b'{"type":"ready","sample_rate":24000}'))
        ws = _native.WsConnection(1 << 20)  # the server's side: it unmasks
        while chunk := await stream.receive_some(65536):
            for event in ws.receive_data(chunk):
                if isinstance(event, _native.Close):
                    await stream.send_all(server_frame(0x8, b"\x03\xe8"))  # 1000
                    return
                if isinstance(event, _native.TextMessage) and "flush" in event.data:
                    audio = b"".join(server_frame(0x2, i.to_bytes(2, "little") * (size // 2))
                                     for i in range(frames))
                    await stream.send_all(audio + server_frame(0x1, b'{"type":"flushed"}'))

    return behave
