"""Where the memory of an idle, authenticated connection goes (issue 12 point 3): a
gateway in this process (tracemalloc on), N upgraded connections with a checked key and
no `init` held by a client process, then the growth per connection of what tracemalloc
sees (Python objects; grouped by file and line) and of trio tasks. ``--no-trace``: RSS
growth and tasks only (tracemalloc's own bookkeeping inflates RSS); RSS minus traced
is then native (the Rust frame codec's buffers) and malloc's overhead.

    python bench/idle_breakdown.py [--connections 2000] [--top 25] [--batch B] [--no-trace]"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import replace
from pathlib import Path

import psutil
import trio

from slng_fast.config import Config
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store

CLIENT = r'''
import socket, sys
port, n, key, batch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
req = ("GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n" % key).encode()
socks = []
while len(socks) < n:  # a batch at a time, each answered before the next
    some = []
    for _ in range(min(batch, n - len(socks))):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); some.append(s)
    for s in some:
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert b" 101 " in head.split(b"\r\n")[0], head
    socks += some
print("ready", flush=True)
sys.stdin.read()
'''


async def main(n: int, top: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Config()
        tiers = {**base.tiers, "enterprise": replace(base.tiers["enterprise"],
                                                     max_connections=n + 100)}
        config = Config(data_dir=Path(tmp), tiers=tiers, max_pending_connections=n + 100,
                        max_pending_per_address=n + 100)
        gateway, secret = gateway_with_key(config, {"espeak": "ws://127.0.0.1:9/"})
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_gateway, gateway, "127.0.0.1", 0)
            await trio.sleep(0.5)
            growth = Growth()
            client = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT, str(port), str(n), secret, str(batch)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert client.stdout is not None and client.stdin is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await client.stdout.receive_some(64)
            await trio.sleep(1.5)
            growth.report(n, top, "connections (no init)")
            await client.stdin.aclose()
            await client.wait()
            nursery.cancel_scope.cancel()


def gateway_with_key(config: Config, engine_urls: dict[str, str]) -> tuple[Gateway, str]:
    """A gateway for an in-process bench, and an enterprise key of its store."""
    store = Store(config.data_dir)
    _, secret = store.create_key("enterprise", "bench")
    registry = ProviderRegistry(config, engine_urls, {}, environ={})
    return Gateway(config=config, store=store, registry=registry), secret


class Growth:
    """RSS, trio tasks and (with tracemalloc on) Python objects, from now to `report`."""

    def __init__(self) -> None:
        gc.collect()
        self.ps = psutil.Process()
        self.tasks = trio.lowlevel.current_statistics().tasks_living
        self.snap = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        self.rss = self.ps.memory_info().rss

    def report(self, n: int, top: int, what: str) -> None:
        """The growth per one of ``n`` (``what``: connections, streams)."""
        gc.collect()
        rss = self.ps.memory_info().rss - self.rss
        tasks = trio.lowlevel.current_statistics().tasks_living - self.tasks
        if self.snap is None:
            print(f"{n} {what}, tracemalloc off, each: RSS {rss / n / 1024:.2f} KiB, "
                  f"trio tasks {tasks / n:.2f}")
        else:
            report(self.snap, tracemalloc.take_snapshot(), n, rss, tasks, top, what)


def report(snap0: tracemalloc.Snapshot, snap1: tracemalloc.Snapshot, n: int,
           rss: int, tasks: int, top: int, what: str) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    snap0, snap1 = snap0.filter_traces(filters), snap1.filter_traces(filters)
    traced = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    print(f"{n} {what}, each: "
          f"RSS {rss / n / 1024:.2f} KiB (tracemalloc's overhead included), traced "
          f"(Python) {traced / n / 1024:.2f} KiB, trio tasks {tasks / n:.2f}")
    print("\nby file (bytes per connection):")
    for stat in snap1.compare_to(snap0, "filename")[:12]:
        print(f"  {stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks  "
              f"{stat.traceback[0].filename.split('site-packages/')[-1]}")
    print("\nby line (bytes per connection):")
    for stat in snap1.compare_to(snap0, "lineno")[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks  "
              f"{frame.filename.split('site-packages/')[-1].split('python/')[-1]}:"
              f"{frame.lineno}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--batch", type=int, default=0,
                        help="open this many at a time, each batch answered before the "
                             "next (default: all at once, a burst)")
    parser.add_argument("--no-trace", action="store_true",
                        help="RSS and tasks only (tracemalloc's own overhead inflates RSS)")
    args = parser.parse_args()
    if not args.no_trace:
        tracemalloc.start(1)
    trio.run(main, args.connections, args.top, args.batch or args.connections)
