"""What idle connections cost the gateway in memory, against a minimal `websockets` server
holding the same connections (what a user would otherwise run), measured in one run.

Two kinds of idle connection, N of each (default 10,000):

* **pre-session**: a TCP connection that has sent nothing (no request head yet). These are
  what the pending-connection bound (`max_pending_connections`, per worker) protects
  against; the bench raises the bound above N to measure them.
* **upgraded**: an authenticated WebSocket that has not sent `init` (the gateway has
  accepted it, checked its key and holds a session for it).

The memory figure is the server process's RSS growth divided by N (psutil), after the
connections are all open and a second of quiet, each kind in fresh server processes
(``--rounds R``: R fresh pairs per kind, the median reported). The gateway runs as `slng-fast serve`
(engines are separate processes and not counted); the baseline is an asyncio
`websockets` server that accepts every connection and waits.

    python bench/idle_connections.py [--connections 10000] [--rounds 1] [--batch B]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "slng_fast"]

BASELINE = r'''
import asyncio, sys
from websockets.asyncio.server import serve

async def hold(ws):
    await ws.wait_closed()

async def main():
    async with serve(hold, "127.0.0.1", 0, compression=None, max_queue=16) as server:
        print("listening on ws://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
'''

UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n{auth}\r\n")


def wait_listening(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the server exited before it listened")
        match = re.search(r"listening on wss?://[^:]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise SystemExit("the server did not listen within 90 s")


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        socks.append(sock)
    return socks


def open_upgraded(port: int, n: int, path: str, key: str | None,
                  batch: int = 0) -> list[socket.socket]:
    """``batch``: this many at a time, each batch answered before the next (0: all at
    once, a burst; the memory a burst's handshakes used in flight stays partly held)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    request = UPGRADE.format(path=path, auth=auth).encode()
    socks: list[socket.socket] = []
    while len(socks) < n:
        some = []
        for _ in range(min(batch or n, n - len(socks))):  # each request at once: servers
            sock = socket.create_connection(("127.0.0.1", port))  # time out silent ones
            sock.sendall(request)
            some.append(sock)
        for sock in some:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise SystemExit(f"the server closed an upgrade: {head[:200]!r}")
                head += chunk
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise SystemExit(f"upgrade refused: {head[:200]!r}")
        socks += some
    return socks


def settle_rss(ps: psutil.Process) -> int:
    time.sleep(1.0)
    return int(ps.memory_info().rss)


def measure(name: str, ps: psutil.Process, open_them) -> dict[str, float]:
    print(f"measuring {name} ...", flush=True)
    before = settle_rss(ps)
    socks = open_them()
    after = settle_rss(ps)
    n = len(socks)
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    return {"n": n, "before_mb": before / 2**20, "after_mb": after / 2**20,
            "per_connection_kb": (after - before) / n / 1024}


@contextlib.contextmanager
def servers(n: int) -> Iterator[tuple[int, int, str, psutil.Process, psutil.Process]]:
    """A fresh gateway (`slng-fast serve`, an enterprise key) and a fresh baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        config = Path(tmp) / "config.toml"
        config.write_text(f"[gateway]\nmax_pending_connections = {n + 100}\n"
                          f"max_pending_per_address = {n + 100}\n"
                          f"[tiers.enterprise]\nmax_connections = {n + 100}\n")
        env = {**os.environ, "SLNG_FAST_HOME": str(data)}
        log = open(Path(tmp) / "gateway.log", "w")
        gateway = subprocess.Popen(CLI + ["serve", "--port", "0", "--config", str(config)],
                                   stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        try:
            port = wait_listening(gateway)
            key = subprocess.run(CLI + ["keys", "create", "--tier", "enterprise"],
                                 capture_output=True, text=True, env=env,
                                 check=True).stdout.strip().splitlines()[-1]
            base_port = wait_listening(baseline)
            yield port, base_port, key, psutil.Process(gateway.pid), psutil.Process(baseline.pid)
        except SystemExit:
            log.flush()
            print("\n".join(line for line in (Path(tmp) / "gateway.log").read_text()
                            .splitlines() if '"info"' not in line)[-3000:], file=sys.stderr)
            raise
        finally:
            for proc in (gateway, baseline):
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh servers per kind; the median is reported")
    parser.add_argument("--batch", type=int, default=0,
                        help="upgrade this many at a time (default: all at once)")
    args = parser.parse_args()
    n = args.connections
    path = "/v1/tts/espeak-websocket-stream"
    runs: dict[str, list[dict[str, float]]] = {}
    # Each kind in fresh processes: memory a previous kind's connections left free in
    # the allocator's arenas would be reused and hide part of the growth.
    for _ in range(args.rounds):
        for kind in ("pre-session", "upgraded"):
            with servers(n) as (port, base_port, key, ours, theirs):
                if kind == "pre-session":
                    ours_open = lambda: open_idle(port, n)  # noqa: E731
                    theirs_open = lambda: open_idle(base_port, n)  # noqa: E731
                else:
                    ours_open = lambda: open_upgraded(  # noqa: E731
                        port, n, path, key, args.batch)
                    theirs_open = lambda: open_upgraded(  # noqa: E731
                        base_port, n, "/", None, args.batch)
                name = "gateway upgraded, no init" if kind == "upgraded" else f"gateway {kind}"
                runs.setdefault(name, []).append(measure(name, ours, ours_open))
                name = f"websockets {kind}"
                runs.setdefault(name, []).append(measure(name, theirs, theirs_open))
    results = {name: sorted(rs, key=lambda r: r["per_connection_kb"])[len(rs) // 2]
               for name, rs in runs.items()}
    if args.rounds > 1:
        print("\nKiB each, every round: " + "; ".join(
            f"{name} " + ", ".join(f"{r['per_connection_kb']:.2f}" for r in rs)
            for name, rs in runs.items()))
    print(f"\nidle connections: {n} each, RSS growth of the server process per connection")
    print(f"{'server, kind':<28} {'before MiB':>10} {'after MiB':>10} {'KiB each':>9}")
    for name, r in results.items():
        print(f"{name:<28} {r['before_mb']:>10.1f} {r['after_mb']:>10.1f} "
              f"{r['per_connection_kb']:>9.2f}")
    pre = results["gateway pre-session"]["per_connection_kb"]
    pre_base = results["websockets pre-session"]["per_connection_kb"]
    up = results["gateway upgraded, no init"]["per_connection_kb"]
    up_base = results["websockets upgraded"]["per_connection_kb"]
    print(f"\npre-session: gateway {pre:.2f} KiB vs websockets {pre_base:.2f} KiB "
          f"({pre_base / pre:.2f}x)")
    print(f"upgraded:    gateway {up:.2f} KiB vs websockets {up_base:.2f} KiB "
          f"({up_base / up:.2f}x)")
    print(f"{n} pre-session connections cost the gateway {pre * n / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
