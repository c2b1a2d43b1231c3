"""The floor under any relay on this machine: what one core spends just moving the
frames of K real-time streams through the kernel, with no WebSocket framing, no JSON,
no event loop, no Python work beyond the calls themselves.

A source process (core 1) writes one 1,920-byte frame (40 ms of 24 kHz PCM16) to each of
K loopback TCP connections every 40 ms and drains K others. The floor relay (core 0) is a
level-triggered ``select.epoll`` loop: for each readable upstream socket, ``os.read`` it
and ``os.write`` a precomputed 2,604-byte frame (the size of the gateway's ``audio_chunk``
WebSocket frame) to the paired client socket. Its user and system CPU per
stream-second is what K streams cost before a gateway does anything at all; bench/e2e.py
measures the real systems against the same core.

    python bench/kernel_floor.py [--k 500,1000] [--seconds 8]"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time

FRAME_IN = b"\x01" * 1920
FRAME_OUT = b"\x02" * 2604
TICK = 0.040


def pairs(k: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """K connected loopback TCP pairs: (near ends, far ends)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    near, far = [], []
    for _ in range(k):
        a = socket.create_connection(("127.0.0.1", port))
        b, _ = listener.accept()
        for s in (a, b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        near.append(a)
        far.append(b)
    listener.close()
    return near, far


def source(upstream: list[socket.socket], clients: list[socket.socket], seconds: float) -> None:
    os.sched_setaffinity(0, {1})
    poll = select.epoll()
    for s in clients:
        s.setblocking(False)
        poll.register(s.fileno(), select.EPOLLIN)
    fds = [s.fileno() for s in upstream]
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_tick:
            for fd in fds:
                os.write(fd, FRAME_IN)
            next_tick += TICK
        for fd, _ in poll.poll(max(0.0, next_tick - time.monotonic())):
            try:
                os.read(fd, 65536)
            except BlockingIOError:
                pass


def relay(upstream: list[socket.socket], clients: list[socket.socket], seconds: float) -> tuple[float, float]:
    os.sched_setaffinity(0, {0})
    poll = select.epoll()
    peer = {}
    for u, c in zip(upstream, clients):
        u.setblocking(False)
        poll.register(u.fileno(), select.EPOLLIN)
        peer[u.fileno()] = c.fileno()
    t0 = os.times()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for fd, _ in poll.poll(0.1):
            try:
                os.read(fd, 65536)
            except BlockingIOError:
                continue
            os.write(peer[fd], FRAME_OUT)
    t1 = os.times()
    return t1.user - t0.user, t1.system - t0.system


def measure(k: int, seconds: float) -> str:
    up_near, up_far = pairs(k)  # the source writes near, the relay reads far
    cl_near, cl_far = pairs(k)  # the relay writes near, the source reads far
    child = os.fork()
    if child == 0:
        try:
            source(up_near, cl_far, seconds + 1.0)
        finally:
            os._exit(0)
    time.sleep(0.5)
    user, system = relay(up_far, cl_near, seconds)
    os.waitpid(child, 0)
    for s in up_near + up_far + cl_near + cl_far:
        s.close()
    stream_s = k * seconds
    total = user + system
    return (f"| {k:,} | {total / stream_s * 1e6:,.0f} | {user / stream_s * 1e6:,.0f} | "
            f"{system / stream_s * 1e6:,.0f} | {total / seconds * 100:.0f} % | "
            f"{total / (stream_s / TICK) * 1e6:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", default="500,1000")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print("| K | floor relay CPU us / stream-s | user | system | core | us per frame |")
    print("|---|---|---|---|---|---|")
    for k in (int(v) for v in args.k.split(",")):
        print(measure(k, args.seconds), flush=True)


if __name__ == "__main__":
    main()
