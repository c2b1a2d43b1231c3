"""A raw WebSocket client for the fuzzer: it sends frames exactly as built, malformed ones
included (reserved bits and opcodes, unmasked, fragmented, long control frames, lengths
that lie), which a proper client library refuses to produce. Trio, no other dependency."""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          mask: bool = True, length: int | None = None) -> bytes:
    """One frame as the bytes a client puts on the wire; ``length`` overrides the
    declared payload length (a frame that lies about its size)."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        head += bytes([mask_bit | declared])
    elif declared < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack(">H", declared)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


@dataclass
class Reply:
    """What came back on one raw connection."""

    status: int = 0  # the handshake's HTTP status (101 when upgraded)
    texts: list[bytes] | None = None
    binaries: int = 0
    close_code: int | None = None  # None: no close frame (the TCP connection just ended)


class RawWebSocket:
    """An upgraded connection over a plain trio stream; reads server frames (unmasked)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.send_lock = trio.Lock()  # the reader answers a close while the writer writes

    @classmethod
    async def connect(cls, url: str, key: str) -> tuple[RawWebSocket | None, int]:
        """Open and upgrade; (socket, 101) or (None, the HTTP status refusing it)."""
        parts = urlsplit(url)
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        nonce = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n")
        await stream.send_all(request.encode())
        ws = cls(stream)
        while b"\r\n\r\n" not in ws.buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                await stream.aclose()
                return None, 0
            ws.buffer += chunk
        head, ws.buffer = ws.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            await stream.aclose()
            return None, status
        return ws, status

    async def send(self, data: bytes) -> bool:
        """Write bytes; False when the server has already gone."""
        try:
            async with self.send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    async def _need(self, n: int) -> bool:
        while len(self.buffer) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def read_until_closed(self, reply: Reply) -> None:
        """Read server frames into ``reply`` until a close frame or the end of the
        stream; answers the server's close so the handshake completes."""
        reply.texts = reply.texts if reply.texts is not None else []
        try:
            while await self._need(2):
                b0, b1 = self.buffer[0], self.buffer[1]
                n, at = b1 & 0x7F, 2
                if n == 126:
                    if not await self._need(4):
                        return
                    n, at = struct.unpack(">H", self.buffer[2:4])[0], 4
                elif n == 127:
                    if not await self._need(10):
                        return
                    n, at = struct.unpack(">Q", self.buffer[2:10])[0], 10
                if not await self._need(at + n):
                    return
                payload, self.buffer = self.buffer[at:at + n], self.buffer[at + n:]
                opcode = b0 & 0xF
                if opcode == TEXT:
                    reply.texts.append(payload)
                elif opcode == BINARY:
                    reply.binaries += 1
                elif opcode == CLOSE:
                    reply.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 \
                        else 1005
                    await self.send(frame(CLOSE, payload[:2]))
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    async def aclose(self) -> None:
        await self.stream.aclose()
