"""Echo server CPU per WebSocket message: the native transport vs trio-websocket.

Each transport serves an echo handler (receive, send back) through the gateway's
transport interface, in its own server process; this process is the client (a
blocking socket with the native client framing, so the client costs little and
runs on the other core). For each round the server process's CPU time (user +
system, from /proc via psutil) is read before and after N round trips of one
message; rounds alternate between the transports, and the median is printed in
microseconds of server CPU per echoed message, plus the ratio.

    python bench/bench_ws.py [--messages 5000] [--size 6400] [--rounds 3] [--text]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import psutil

from slng_fast import _native

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def serve(kind: str) -> None:
    import trio

    from slng_fast.gateway.native_transport import serve_native_websocket
    from slng_fast.gateway.transport import ConnectionClosed, IncomingRequest, serve_trio_websocket

    async def handler(request: IncomingRequest) -> None:
        conn = await request.accept(None)
        try:
            while True:
                await conn.send(await conn.receive())
        except ConnectionClosed:
            pass

    async def main() -> None:
        server = serve_native_websocket if kind == "native" else serve_trio_websocket
        async with trio.open_nursery() as nursery:
            port = await nursery.start(lambda task_status: server(handler, "127.0.0.1", 0,
                                                                  task_status=task_status))
            print(port, flush=True)

    trio.run(main)


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(
            f"GET /bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.ws = _native.WsConnection(1 << 24, client=True)
        self.events = self.ws.receive_data(rest)
        # serve_trio_websocket swaps in its lenient message decoder after accept()
        # returns; a message already half read by then fails with 1002 "unexpected
        # CONTINUATION". Give it a moment so the comparison measures the steady state.
        time.sleep(0.05)

    def echo(self, frame: bytes) -> None:
        self.sock.sendall(frame)
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server went away")
            self.events = self.ws.receive_data(data)
        self.events.pop(0)

    def close(self) -> None:
        """The whole close handshake: our close frame, the server's, then its EOF."""
        self.sock.sendall(self.ws.send_close(1000, ""))
        self.sock.settimeout(10)
        while self.sock.recv(65536):
            pass
        self.sock.close()


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(port: int, proc: psutil.Process, frame: bytes, messages: int) -> tuple[float, float]:
    """(server CPU us per message, wall us per round trip)."""
    client = Client(port)
    for _ in range(min(500, messages)):  # warm up
        client.echo(frame)
    c0, w0 = cpu(proc), time.perf_counter()
    for _ in range(messages):
        client.echo(frame)
    c1, w1 = cpu(proc), time.perf_counter()
    client.close()
    return (c1 - c0) / messages * 1e6, (w1 - w0) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text", action="store_true", help="text messages instead of binary")
    parser.add_argument("--serve", choices=["native", "trio-websocket"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    payload = os.urandom(args.size)
    frame_ws = _native.WsConnection(client=True)
    if args.text:
        frame = frame_ws.send_text(payload.hex()[: args.size])
    else:
        frame = frame_ws.send_binary(payload)

    kinds = ["native", "trio-websocket"]
    servers = {}
    for kind in kinds:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        servers[kind] = (proc, int(proc.stdout.readline()), psutil.Process(proc.pid))
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    try:
        for r in range(args.rounds):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                _, port, ps = servers[kind]
                results[kind].append(measure(port, ps, frame, args.messages))
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait()

    what = "text" if args.text else "binary"
    print(f"echo of one {args.size}-byte {what} message, {args.messages} round trips x {args.rounds} rounds "
          f"(median), server CPU per message:")
    med = {}
    for kind in kinds:
        cpu_us = statistics.median(c for c, _ in results[kind])
        wall_us = statistics.median(w for _, w in results[kind])
        med[kind] = cpu_us
        rounds = ", ".join(f"{c:.1f}" for c, _ in results[kind])
        print(f"  {kind:15s} {cpu_us:7.1f} us CPU/msg  ({wall_us:6.1f} us wall/round trip; rounds: {rounds})")
    print(f"  trio-websocket / native = {med['trio-websocket'] / med['native']:.2f}x")


if __name__ == "__main__":
    main()
