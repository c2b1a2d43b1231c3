"""K real-time STT streams through one gateway worker, with the data plane's uplink on and
off (issue 12, the STT direction): the gateway's CPU per stream-second.

Each client sends ``start`` (16 kHz, ``--codec``) to the ``whisper`` endpoint, then 20 ms
binary frames in real time for ``--seconds``; the gateway converts them to WhisperLive's
float32 and writes them to a sink upstream that reads and drops them. The gateway is
``slng_fast serve --transport native`` pinned to core 0; the clients and the sink share one
asyncio process on core 1. "off" is the same gateway with ``start_uplink`` refused (the
session's path carries every frame), "reader" the uplink in each client's reader task
(the worker's epoll plane refused), "plane" the default (the epoll plane serves every
ready client in one call), each started through a one-line launcher. Levels and modes
are interleaved; CPU is the gateway process's (user + system) over the window when
every stream runs, divided by K x window.

    python bench/stt_uplink.py --levels 50,100,200 --seconds 10 --rounds 2

The clients are one asyncio process: past a few hundred streams they, not the gateway,
may be what cannot keep up (the line says how much of the audio reached the sink).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from slng_fast import _native

PY = sys.executable
HERE = Path(__file__).resolve().parent
LAUNCH = ("import slng_fast.gateway.native_transport as t; {patch}"
          "from slng_fast.cli import main; raise SystemExit(main())")
MODES = {
    "off": "t.NativeWebSocketConnection.start_uplink = lambda self, uplink: False; ",
    "reader": "t.NativeWebSocketConnection._plane_for = lambda self, sink: None; ",
    "plane": "",
}


RECEIVED = [0]  # bytes the sink read, all streams


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that answers the handshake and drops everything it reads."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(65536)
        if not chunk:
            return
        head += chunk
    request = _native.ws_parse_request(head)
    writer.write(_native.ws_accept_response(request.key, None))
    try:
        while chunk := await reader.read(1 << 20):
            RECEIVED[0] += len(chunk)
    except (asyncio.CancelledError, ConnectionError):
        pass
    writer.close()


async def connect(port: int, key: str, codec: str, gate: asyncio.Semaphore):
    """One session, started: its stream and framing."""
    async with gate:  # the gateway bounds the handshakes in flight
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("GET /v1/stt/whisper-websocket-stream HTTP/1.1\r\nHost: x\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
                      ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await reader.read(4096)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head[:200]
    ws = _native.WsConnection(1 << 22, client=True)
    writer.write(ws.send_text('{"type":"start","sample_rate":16000,"encoding":"%s"}' % codec))
    return reader, writer, ws


async def stream(session, codec: str, seconds: float, start_at: float) -> None:
    """20 ms frames in real time from ``start_at``, then close."""
    reader, writer, ws = session
    frame = bytes(320 if codec == "mulaw" else 640)
    drain = asyncio.ensure_future(_drain(reader))
    loop = asyncio.get_running_loop()
    at = start_at
    while at < start_at + seconds:
        await asyncio.sleep(max(0.0, at - loop.time()))
        writer.write(ws.send_binary(frame))
        at += 0.02
    writer.write(ws.send_close(1000, ""))
    await asyncio.sleep(0.5)
    drain.cancel()
    writer.close()


async def _drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def load(port: int, key: str, k: int, codec: str, seconds: float,
               started: asyncio.Future) -> None:
    gate = asyncio.Semaphore(16)
    sessions = await asyncio.gather(*(connect(port, key, codec, gate) for _ in range(k)))
    t0 = asyncio.get_running_loop().time() + 0.5
    started.set_result(t0)
    await asyncio.gather(*(stream(s, codec, seconds, t0 + i * 0.02 / k)
                           for i, s in enumerate(sessions)))


def run_level(mode: str, k: int, args: argparse.Namespace, tmp: Path,
              key: str) -> tuple[float, float]:
    """The gateway's CPU ms per stream-second for one level, and the share of the audio
    the sink received (float32 at 16 kHz for every stream-second sent)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sink_port = s.getsockname()[1]
    config = tmp / "gateway.toml"
    config.write_text("[gateway]\nengines = []\n\n[tiers.enterprise]\nmax_connections = 100000\n"
                      "messages_per_minute = 1000000\nmax_duration_s = 100000\n\n"
                      f'[providers.whisper]\nurl = "ws://127.0.0.1:{sink_port}/"\n')
    serve = ["serve", "--port", "0", "--data-dir", str(tmp / "data"), "--config", str(config),
             "--transport", "native"]
    argv = [PY, "-c", LAUNCH.format(patch=MODES[mode]), *serve]
    log = tmp / f"server-{mode}-{k}.log"
    with log.open("w") as out:  # a file, not a pipe: the gateway never waits on its log
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        os.sched_setaffinity(server.pid, {0})
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            found = re.search(r"listening on ws://[^:]+:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.1)
        proc = psutil.Process(server.pid)
        time.sleep(args.settle)  # the gateway's start (its resampler prewarm) is not measured

        async def main() -> tuple[float, float]:
            RECEIVED[0] = 0
            sink_server = await asyncio.start_server(sink, "127.0.0.1", sink_port)
            loop = asyncio.get_running_loop()
            started: asyncio.Future[float] = loop.create_future()
            task = asyncio.ensure_future(load(port, key, k, args.codec, args.seconds, started))
            t0 = await started
            await asyncio.sleep(t0 - loop.time() + 1.0)  # every stream started, and settled
            c0, w0 = proc.cpu_times(), time.monotonic()
            await asyncio.sleep(args.seconds - 2.0)
            c1, w1 = proc.cpu_times(), time.monotonic()
            await task
            sink_server.close()
            await asyncio.sleep(0.5)
            cpu = (c1.user + c1.system) - (c0.user + c0.system)
            return cpu * 1000.0 / (k * (w1 - w0)), RECEIVED[0] / (k * args.seconds * 64000)

        return asyncio.run(main())
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="50,100,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--codec", default="pcm16", choices=("pcm16", "mulaw"))
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds between the gateway's start and the first client")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="slng-stt-"))
    (tmp / "data").mkdir()
    out = subprocess.run([PY, "-m", "slng_fast", "keys", "--data-dir", str(tmp / "data"),
                          "create", "--tier", "enterprise", "--name", "bench"],
                         capture_output=True, text=True, check=True)
    key = out.stdout.strip().splitlines()[-1]
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for k in map(int, args.levels.split(",")):
            for mode in args.modes.split(","):
                ms, got = run_level(mode, k, args, tmp, key)
                results.setdefault((mode, k), []).append(ms)
                print(f"K={k:5d} uplink {mode:6s}: {ms:.3f} ms CPU per stream-second, "
                      f"{got:.1%} of the audio reached the sink", flush=True)
    print("\nms of gateway CPU per stream-second (the best round); ratio: off / plane, "
          "reader / plane")
    print("K         off  reader   plane  off/plane  reader/plane")
    if set(args.modes.split(",")) != set(MODES):
        return
    for k in map(int, args.levels.split(",")):
        off, reader, plane = (min(results[(m, k)]) for m in MODES)
        print(f"{k:<6d} {off:6.3f} {reader:7.3f} {plane:7.3f} {off / plane:10.2f} "
              f"{reader / plane:13.2f}")


if __name__ == "__main__":
    main()
