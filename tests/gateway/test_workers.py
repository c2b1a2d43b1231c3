"""`slng-fast serve --workers 2 --redis URL`: two worker processes on one port share the
engines, the keys and, through a real redis-server, the limits: the free tier's single
connection holds across workers, a worker killed with -9 leaks no slot, and with Redis
gone new sessions are refused with 1013 while open ones go on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import orjson
import pytest
import trio
import trio_websocket

from harness import RedisServer
from wsclient import closed_code, recv, send

CLI = [sys.executable, "-m", "slng_fast"]


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def workers(tmp_path, redis_server):
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path / "data")}
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nlease_ttl_s = 2.0\n")
    free = subprocess.run(CLI + ["keys", "create", "--tier", "free"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    proc = subprocess.Popen(CLI + ["serve", "--port", "0", "--workers", "2", "--redis",
                                   redis_server.url, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and url is None:
        match = re.search(r"listening on (ws://\S+)", proc.stdout.readline())
        url = match.group(1) if match else None
    assert url, "the gateway did not start"
    yield proc, url, free
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def healthz(url: str) -> dict:
    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := await stream.receive_some(4096):
        data += chunk
    await stream.aclose()
    return orjson.loads(data.split(b"\r\n\r\n", 1)[1])


async def pids_and_sessions(url: str, tries: int = 60) -> dict[int, int]:
    seen: dict[int, int] = {}
    for _ in range(tries):
        h = await healthz(url)
        seen[h["pid"]] = h["sessions"]
    return seen


async def open_tts(nursery, url: str, key: str):
    return await trio_websocket.connect_websocket_url(
        nursery, f"{url}/v1/tts/espeak-websocket-stream", None,
        extra_headers=[(b"authorization", f"Bearer {key}".encode())])


async def test_limits_hold_across_workers_and_survive_kill_9(workers, redis_server):
    proc, url, free = workers
    async with trio.open_nursery() as nursery:
        seen = await pids_and_sessions(url)
        assert len(seen) == 2, f"both workers answer on the one port: {seen}"
        holder = await open_tts(nursery, url, free)
        await send(holder, type="ping")
        assert (await recv(holder))["type"] == "pong"
        for _ in range(6):  # whichever worker takes them, the free tier's one slot is taken
            ws = await open_tts(nursery, url, free)
            event = await recv(ws)
            assert event["code"] == "too_many_connections"
            assert await closed_code(ws) == 4001
        busy = [pid for pid, n in (await pids_and_sessions(url)).items() if n == 1]
        assert len(busy) == 1
        os.kill(busy[0], signal.SIGKILL)  # the worker holding the session dies hard
        with trio.move_on_after(20):
            while True:  # its lease expires (2 s here) and the slot is free again
                await trio.sleep(0.5)
                try:
                    ws = await open_tts(nursery, url, free)
                    await send(ws, type="ping")
                    event = await recv(ws)
                except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
                    continue
                await ws.aclose()
                if event.get("type") == "pong":
                    break
        assert event.get("type") == "pong", event
        nursery.cancel_scope.cancel()


async def test_redis_gone_refuses_new_sessions_with_1013_and_open_ones_go_on(workers,
                                                                            redis_server):
    proc, url, free = workers
    async with trio.open_nursery() as nursery:
        ws = await open_tts(nursery, url, free)
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
        redis_server.stop()
        await trio.sleep(0.5)
        await send(ws, type="ping")  # the open session goes on (its bucket falls back locally)
        assert (await recv(ws))["type"] == "pong"
        refused = await open_tts(nursery, url, free)
        event = await recv(refused)
        assert event["type"] == "error" and event["retryable"] is True
        assert await closed_code(refused) == 1013
        await ws.aclose()
        nursery.cancel_scope.cancel()


def test_several_workers_need_redis(tmp_path):
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path)}
    result = subprocess.run(CLI + ["serve", "--workers", "2"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "--redis" in result.stderr
