"""The upstream of bench/e2e.py: a fake SLNG model server that streams real-time PCM.

Speaks the SLNG model-server dialect as the gateway does (python/slng_fast/providers/slng.py):
on connect ``{"type":"ready","sample_rate":24000}``; the first client frame is the JSON
settings (its ``max_tokens`` carries the bench's session number, 1-based); plain text is
buffered; ``{"type":"control","action":"flush"}`` starts the stream: one binary PCM16
frame of 1920 bytes (40 ms at 24 kHz) every 40 ms, on a fixed schedule (a real-time
source does not wait for a slow reader), for ``--seconds``; then ``{"type":"flushed"}``.

Lean on purpose (it shares a core with the clients): asyncio protocols, the native core's
sans-I/O WebSocket framing, and one precomputed frame that is written as is (server frames
are not masked). The send time (``time.monotonic()``, one clock for all processes on Linux)
of every frame is kept per session; on ``dump PATH`` (a line on stdin) they are written to
PATH as a pickle ``{session: array('d')}`` and ``dumped`` is printed.

    python bench/e2e_upstream.py --seconds 15 [--cpu 1]
prints ``port N`` once listening."""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import os
import pickle
import sys
import time
from array import array

import orjson

from slng_fast import _native

FRAME_MS = 40
RATE = 24000
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2  # 1920

READY = orjson.dumps({"type": "ready", "sample_rate": RATE}).decode()
FLUSHED = orjson.dumps({"type": "flushed"}).decode()


def pcm_frame() -> bytes:
    samples = FRAME_BYTES // 2
    out = array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(samples)))
    return out.tobytes()


class Streams:
    """Every streaming connection on one schedule (a heap of due times): one timer
    wakes for all frames that are due, so K streams cost K writes, not K timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.frames = max(1, round(seconds * 1000 / FRAME_MS))
        self.heap: list[tuple[float, int, UpstreamConn]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.wake_at = math.inf
        self.audio = _native.WsConnection().send_binary(pcm_frame())
        self.flushed = _native.WsConnection().send_text(FLUSHED)
        self.sent: dict[int, array] = {}
        self.late = 0.0  # the worst lateness of a send against its schedule (s)
        self.counter = 0

    def start(self, conn: UpstreamConn) -> None:
        now = time.monotonic()
        conn.next_at = now
        conn.left = self.frames
        self.counter += 1
        heapq.heappush(self.heap, (now, self.counter, conn))
        self._arm(now)

    def _arm(self, at: float) -> None:
        if at < self.wake_at:
            if self.timer is not None:
                self.timer.cancel()
            self.wake_at = at
            self.timer = self.loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.wake_at = math.inf
        heap = self.heap
        monotonic = time.monotonic
        now = monotonic()
        horizon = now + 0.0005
        step = FRAME_MS / 1000
        while heap and heap[0][0] <= horizon:
            due, n, conn = heapq.heappop(heap)
            if conn.transport is None or conn.transport.is_closing():
                continue
            t = monotonic()
            if t - due > self.late:
                self.late = t - due
            conn.times.append(t)
            conn.transport.write(self.audio)
            conn.left -= 1
            if conn.left > 0:
                heapq.heappush(heap, (due + step, n, conn))
            else:
                conn.transport.write(self.flushed)
        if heap:
            self._arm(heap[0][0])


class UpstreamConn(asyncio.Protocol):
    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.ws: _native.WsConnection | None = None
        self.session = 0
        self.settings_seen = False
        self.times = array("d")
        self.next_at = 0.0
        self.left = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ws is None:
            self.head += data
            request = _native.ws_parse_request(self.head)
            if request is None:
                return
            rest = self.head[request.consumed:]
            self.head = b""
            assert self.transport is not None
            self.transport.write(_native.ws_accept_response(request.key))
            self.ws = _native.WsConnection(1 << 22)
            self.transport.write(self.ws.send_text(READY))
            if not rest:
                return
            data = rest
        for event in self.ws.receive_data(data):
            match event:
                case _native.TextMessage(text):
                    self.on_text(text)
                case _native.Ping(payload):
                    self.transport.write(self.ws.send_pong(payload))
                case _native.Close() | _native.ProtocolViolation():
                    code = event.close_code if isinstance(event, _native.ProtocolViolation) else 1000
                    self.transport.write(self.ws.send_close(code))
                    self.transport.close()
                    return

    def on_text(self, text: str) -> None:
        if not self.settings_seen:
            self.settings_seen = True
            try:
                self.session = int(orjson.loads(text).get("max_tokens") or 0)
            except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
                self.session = 0
            if self.session:
                self.streams.sent[self.session] = self.times
            return
        if text.startswith("{") and '"flush"' in text:
            self.streams.start(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    streams = Streams(loop, args.seconds)
    server = await loop.create_server(lambda: UpstreamConn(streams), "127.0.0.1", args.port,
                                      backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line:
            break  # stdin closed: the bench is gone
        if line.startswith("dump "):
            path = line[5:]
            with open(path, "wb") as f:
                pickle.dump({"sent": streams.sent, "late": streams.late}, f)
            print("dumped", flush=True)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:  # the bench side shares one core with every stream's frames: the leaner loop
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))
