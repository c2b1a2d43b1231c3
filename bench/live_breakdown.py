"""Where the memory of a live TTS stream goes (issue 12 point 3): a gateway in this
process (tracemalloc on), bench/e2e.py's upstream (real-time PCM, SLNG dialect) and K of
its clients in other processes; in the streams' steady state, the growth per stream of
what tracemalloc sees (Python objects, by file and line), of trio tasks and of RSS.
``--no-trace``: RSS and tasks only (tracemalloc's own bookkeeping inflates RSS); RSS
minus traced is then native (frame codecs, the relay's state) and malloc's overhead.

    python bench/live_breakdown.py [--k 500] [--top 25] [--no-trace]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import trio
from idle_breakdown import Growth, gateway_with_key

from slng_fast.config import Config, ProviderConfig
from slng_fast.gateway.server import serve_gateway

HERE = Path(__file__).parent
SECONDS = 12.0


async def line_from(proc: trio.Process, prefix: bytes) -> bytes:
    assert proc.stdout is not None
    buffer = b""
    while True:
        data = await proc.stdout.receive_some(4096)
        if not data:
            raise SystemExit(f"{proc.args!r} ended before {prefix!r}")
        buffer += data
        for line in buffer.split(b"\n")[:-1]:
            if line.startswith(prefix):
                return line
        buffer = buffer.rsplit(b"\n", 1)[-1]


async def main(k: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        upstream = await trio.lowlevel.open_process(
            [sys.executable, str(HERE / "e2e_upstream.py"), "--seconds", str(SECONDS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        uport = int((await line_from(upstream, b"port ")).split()[1])
        base = Config()
        tiers = {**base.tiers, "enterprise": replace(
            base.tiers["enterprise"], max_connections=k + 100, messages_per_minute=10**6,
            max_duration_s=10**5)}
        config = Config(data_dir=Path(tmp), tiers=tiers, engines=(),
                        max_pending_connections=k + 100, max_pending_per_address=k + 100,
                        providers={"orpheus": ProviderConfig(url=f"ws://127.0.0.1:{uport}/")})
        gateway, secret = gateway_with_key(config, {})
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_gateway, gateway, "127.0.0.1", 0)
            await trio.sleep(0.5)
            growth = Growth()
            clients = await trio.lowlevel.open_process(
                [sys.executable, str(HERE / "e2e_clients.py"), "--port", str(port),
                 "--key", secret, "--k", str(k), "--seconds", str(SECONDS),
                 "--out", str(Path(tmp) / "clients.pkl")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            await line_from(clients, b"connected")
            assert clients.stdin is not None
            await clients.stdin.send_all(f"go {time.monotonic() + 0.3!r}\n".encode())
            await trio.sleep(3.0)  # every stream flushed (1 s ramp) and streaming
            print(f"{len(gateway.ledger.sessions)} sessions open")
            growth.report(k, top, "live TTS streams")
            for proc in (clients, upstream):
                proc.kill()
                await proc.wait()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-trace", action="store_true",
                        help="RSS and tasks only (tracemalloc's own overhead inflates RSS)")
    args = parser.parse_args()
    if not args.no_trace:
        tracemalloc.start(1)
    trio.run(main, args.k, args.top)
