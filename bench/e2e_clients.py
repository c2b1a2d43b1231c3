"""The clients of bench/e2e.py: K TTS sessions over one gateway (or relay), in one process.

Each session connects to ``ws://127.0.0.1:PORT/PATH`` (``Authorization: Bearer KEY``),
sends ``init`` (voice tara, 24 kHz, and ``max_tokens`` = its 1-based session number, which
the SLNG dialect passes to the upstream as its settings, so the upstream knows which
session a connection is) and waits for ``ready``. When every session is ready the process
prints ``connected OK FAILED`` and waits for ``go T0`` on stdin (T0 on ``time.monotonic()``);
session i then sends ``input_text`` + ``flush`` at ``T0 + i * ramp / K`` (so the streams'
40 ms phases are spread evenly, as independent users' would be), records the receive
time of every ``audio_chunk`` by its ``sequence``, and closes after ``audio_end``.

When all sessions are over (or at the deadline) it writes a pickle
``{"recv": {session: array('d')}, "errors": [...], ...}`` to ``--out`` and prints ``done``.

Lean on purpose (it shares a core with the upstream): asyncio protocols and the native
core's sans-I/O WebSocket framing; a frame's receive time is taken once per socket read.

    python bench/e2e_clients.py --port P --key KEY --k 100 --total 100 --out FILE"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pickle
import sys
import time
from array import array

import orjson

from slng_fast import _native

TEXT = "The quick brown fox jumps over the lazy dog. " * 4
AUDIO_PREFIX = '{"type":"audio_chunk"'


class Stats:
    def __init__(self) -> None:
        self.recv: dict[int, array] = {}
        self.errors: list[str] = []
        self.out_of_order = 0
        self.bad_size = 0
        self.finished = 0
        self.open_failed = 0


class ClientConn(asyncio.Protocol):
    def __init__(self, session: int, args: argparse.Namespace, stats: Stats,
                 ready: asyncio.Future[bool], finished: asyncio.Event) -> None:
        self.session = session
        self.args = args
        self.stats = stats
        self.ready = ready
        self.finished_event = finished
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.ws: _native.WsConnection | None = None
        self.times = array("d")
        stats.recv[session] = self.times
        self.over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET {self.args.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.args.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {self.args.key}\r\n\r\n".encode())

    def send(self, message: dict) -> None:
        if self.transport is not None and self.ws is not None and not self.transport.is_closing():
            self.transport.write(self.ws.send_text(orjson.dumps(message).decode()))

    def start_speaking(self) -> None:
        self.send({"type": "input_text", "text": TEXT})
        self.send({"type": "flush"})

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.ws is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            self.head = b""
            if not head.startswith(b"HTTP/1.1 101"):
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.fail(f"handshake refused: {status}")
                return
            self.ws = _native.WsConnection(1 << 24, client=True)
            self.send({"type": "init", "voice_id": "tara", "sample_rate_hz": 24000,
                       "max_tokens": self.session})
            if not data:
                return
        times = self.times
        for event in self.ws.receive_data(data):
            match event:
                case _native.TextMessage(text):
                    message = orjson.loads(text)
                    if text.startswith(AUDIO_PREFIX):
                        if message["sequence"] != len(times):
                            self.stats.out_of_order += 1
                        if len(message["data"]) != 2560:  # base64 of 1920 bytes
                            self.stats.bad_size += 1
                        times.append(now)
                        continue
                    kind = message.get("type")
                    if kind == "ready":
                        if not self.ready.done():
                            self.ready.set_result(True)
                    elif kind == "audio_end":
                        self.end()
                    elif kind == "error":
                        self.fail(f"error event: {message.get('code')}: {message.get('message')}")
                case _native.Ping(payload):
                    self.transport.write(self.ws.send_pong(payload))  # type: ignore[union-attr]
                case _native.Close(code, reason) | _native.ProtocolViolation(code, reason):
                    self.fail(f"closed by the server: {code} {reason}")
                    return

    def end(self) -> None:
        if self.over:
            return
        self.over = True
        self.stats.finished += 1
        if self.transport is not None and self.ws is not None:
            try:
                self.transport.write(self.ws.send_close(1000, ""))
            except Exception:
                pass
            asyncio.get_running_loop().call_later(1.0, self.transport.close)
        if self.stats.finished >= self.args.k:
            self.finished_event.set()

    def fail(self, why: str) -> None:
        if not self.over:
            if len(self.stats.errors) < 50:
                self.stats.errors.append(f"session {self.session}: {why}")
            if not self.ready.done():
                self.ready.set_result(False)
        self.end()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.over:
            self.fail(f"connection lost ({exc})")
        self.transport = None


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    finished = asyncio.Event()
    conns: list[ClientConn] = []
    limit = asyncio.Semaphore(args.connect_concurrency)

    async def open_one(session: int) -> bool:
        async with limit:
            ready: asyncio.Future[bool] = loop.create_future()
            conn = ClientConn(session, args, stats, ready, finished)
            conns.append(conn)
            try:
                await loop.create_connection(lambda: conn, "127.0.0.1", args.port)
                return await asyncio.wait_for(ready, 30)
            except (TimeoutError, OSError) as exc:
                conn.fail(f"cannot open: {exc!r}")
                stats.open_failed += 1
                return False

    first = args.first
    results = await asyncio.gather(*(open_one(first + i) for i in range(args.k)))
    ok = sum(results)
    print(f"connected {ok} {args.k - ok}", flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = (await reader.readline()).decode().split()
    if not line or line[0] != "go":
        return
    t0 = float(line[1])
    step = args.ramp / args.total
    for conn in conns:
        if not conn.over:
            loop.call_at(t0 + (conn.session - 1) * step, conn.start_speaking)
    deadline = t0 + args.ramp + args.seconds + args.grace
    try:
        await asyncio.wait_for(finished.wait(), max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        stats.errors.append(f"deadline: {args.k - stats.finished} sessions still streaming")
    with open(args.out, "wb") as f:
        pickle.dump({"recv": stats.recv, "errors": stats.errors,
                     "out_of_order": stats.out_of_order, "bad_size": stats.bad_size,
                     "finished": stats.finished, "open_failed": stats.open_failed}, f)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0.05)
    print("done", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/tts/orpheus-websocket-stream")
    parser.add_argument("--key", default="none")
    parser.add_argument("--k", type=int, required=True, help="sessions in this process")
    parser.add_argument("--first", type=int, default=1, help="number of its first session")
    parser.add_argument("--total", type=int, default=None, help="sessions in all processes")
    parser.add_argument("--ramp", type=float, default=1.0, help="spread of the flushes (s)")
    parser.add_argument("--seconds", type=float, default=15.0, help="stream length (s)")
    parser.add_argument("--grace", type=float, default=15.0, help="wait beyond the stream (s)")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    args.total = args.total or args.k
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:  # the bench side shares one core with every stream's frames: the leaner loop
        import uvloop
    except ImportError:
        asyncio.run(main(args))
    else:
        uvloop.run(main(args))
