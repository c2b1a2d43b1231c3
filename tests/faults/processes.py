"""Real parts for the process faults: `slng-fast serve` as a child process (optionally with
workers and Redis), keys made in its data directory, and hand-made clients whose sockets
can misbehave (stop reading, vanish with a reset, go silent)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import termios
from pathlib import Path

import orjson
import trio
import trio_websocket

from harness import CLI, listening_url
from slng_fast.store import Store
from wsclient import auth, recv, send


class GatewayProcess:
    """`slng-fast serve --port 0` with a config file; stderr (the log) goes to a file."""

    def __init__(self, directory: Path, config: str, *, workers: int = 1,
                 redis_url: str | None = None) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.config = directory / "gateway.toml"
        self.config.write_text(config)
        self.workers = workers
        self.redis_url = redis_url
        self.log = directory / "gateway.log"
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> GatewayProcess:
        env = {**os.environ, "SLNG_FAST_HOME": str(self.data_dir)}
        env.pop("SLNG_FAST_REDIS_URL", None)
        args = ["serve", "--port", "0", "--config", str(self.config)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=log,
                                         text=True, env=env)
        self.url = listening_url(self.proc, exited=lambda: self.log.read_text()[-2000:])
        return self

    def key(self, tier: str, name: str = "") -> tuple[str, str]:
        """A new key of `tier` in the gateway's key store: (key id, secret)."""
        store = Store(self.data_dir)
        try:
            key, secret = store.create_key(tier, name)
        finally:
            store.close()
        return key.id, secret

    def rows(self) -> list[dict[str, object]]:
        store = Store(self.data_dir)
        try:
            return store.usage_rows()
        finally:
            store.close()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def unexpected_log_lines(self) -> list[str]:
        """Log lines that no fault of these tests should cause: tracebacks, criticals,
        and errors other than the limits backend being unreachable (a Redis fault)."""
        out = []
        for line in self.log.read_text().splitlines():
            if "Traceback" in line or '"level": "critical"' in line:
                out.append(line)
            elif '"level": "error"' in line and "limits backend" not in line:
                out.append(line)
        return out

    def tts(self, query: str = "") -> str:
        return f"{self.url}/v1/tts/espeak-websocket-stream{query}"

    def stt(self, query: str = "") -> str:
        return f"{self.url}/v1/stt/pocketsphinx-websocket-stream{query}"


async def open_ws(nursery: trio.Nursery, url: str, key: str) -> trio_websocket.WebSocketConnection:
    return await trio_websocket.connect_websocket_url(nursery, url, None,
                                                      extra_headers=auth(key))


async def first_event(nursery: trio.Nursery, url: str, key: str) -> tuple[dict, int | None]:
    """Open a TTS session and send `init`: its first event, and the close code if the
    gateway closed it (a refusal)."""
    ws = await open_ws(nursery, url, key)
    try:
        await send(ws, type="init")
    except trio_websocket.ConnectionClosed:
        pass  # refused before it was sent: the refusal is still to be read
    try:
        event = await recv(ws)
    except trio_websocket.ConnectionClosed as exc:
        return {"type": "closed"}, exc.reason.code
    if event["type"] == "ready":
        await ws.aclose()
        return event, None
    code = None
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        code = exc.reason.code
    return event, code


async def accepted_again(nursery: trio.Nursery, url: str, key: str) -> dict:
    """Retry a new session of `key` until it is accepted (`ready`); the refusals seen on
    the way are returned by code. Hang-guarded by the caller."""
    refusals: dict = {}
    while True:
        try:
            event, code = await first_event(nursery, url, key)
        except (OSError, trio_websocket.HandshakeError):
            event, code = {"type": "unreachable"}, None
        if event["type"] == "ready":
            return refusals
        refusals[event.get("code", event["type"])] = code
        await trio.sleep(0.05)


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, zero mask)."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
    return head + b"\x00\x00\x00\x00" + payload


class RawClient:
    """A WebSocket client on a bare socket, so a test decides what it reads, what it
    answers, and how its connection ends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, url: str, path: str, key: str, *,
                      rcvbuf: int | None = None) -> RawClient:
        host, port = url.removeprefix("ws://").split(":")
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        client = cls(sock)
        await trio.to_thread.run_sync(client._blocking_connect, host, int(port))
        client.send_now(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode())
        head = await client._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    def _blocking_connect(self, host: str, port: int) -> None:
        self.sock.setblocking(True)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.sock.setblocking(False)

    def send_now(self, data: bytes) -> None:
        """Write all of `data` (small writes: the socket buffer takes them)."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def send_json(self, **fields: object) -> None:
        self.send_now(masked(0x1, orjson.dumps(fields)))

    async def _fill(self) -> bool:
        await trio.lowlevel.wait_readable(self.sock)
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        self.buffer += data
        return bool(data)

    async def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not await self._fill():
                raise EOFError(self.buffer)
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); EOFError when the stream ends."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if not await self._fill():
                raise EOFError(self.buffer)

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length, start = struct.unpack(">H", buffer[2:4])[0], 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length, start = struct.unpack(">Q", buffer[2:10])[0], 10
        if len(buffer) < start + length:
            return None
        self.buffer = buffer[start + length:]
        return buffer[0] & 0x0F, buffer[start:start + length]

    async def event(self) -> dict:
        """The next text frame's event (pings and binary audio skipped)."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x1:
                return orjson.loads(payload)
            if opcode == 0x8:
                raise EOFError(payload)

    def unread(self) -> int:
        """Bytes the kernel holds for us that we have not read."""
        return struct.unpack("i", fcntl.ioctl(self.sock, termios.FIONREAD, b"\0" * 4))[0]

    async def stalled(self, at_least: int = 2048) -> None:
        """Wait until the server has filled our receive buffer at least this far."""
        while self.unread() < at_least:
            await trio.sleep(0.05)

    def reset(self) -> None:
        """Close abortively: SO_LINGER 0 makes the kernel send RST, no close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
