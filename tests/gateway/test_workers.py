"""`slng-fast serve --workers 2 --redis URL`: two worker processes on one port share the
engines, the keys and, through a real redis-server, the limits: the free tier's single
connection holds across workers, a worker killed with -9 leaks no slot and its ledger rows
are closed with their saved usage, a revocation ends the key's sessions on every worker, and
with Redis gone new sessions are refused with 1013 while open ones go on."""

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


def cli(tmp_path, *args: str) -> str:
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path / "data")}
    return subprocess.run(CLI + list(args), env=env, check=True, capture_output=True,
                          text=True, timeout=60).stdout


async def sessions_on_both_workers(nursery, url: str, key: str) -> list:
    """Open sessions until each worker holds at least one (the kernel picks the worker)."""
    opened = []
    for _ in range(40):
        ws = await open_tts(nursery, url, key)
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
        opened.append(ws)
        busy = await pids_and_sessions(url, tries=20)
        if len(busy) == 2 and all(busy.values()):
            return opened
    raise AssertionError("the sessions all went to one worker")


async def test_revocation_ends_open_sessions_on_every_worker(workers, redis_server, tmp_path):
    proc, url, _ = workers
    key = cli(tmp_path, "keys", "create", "--tier", "enterprise", "--name", "doomed")
    secret = key.strip().splitlines()[-1]
    key_id = [line.split()[0] for line in cli(tmp_path, "keys", "list").splitlines()
              if line.endswith("doomed")][0]
    async with trio.open_nursery() as nursery:
        opened = await sessions_on_both_workers(nursery, url, secret)
        cli(tmp_path, "keys", "revoke", key_id)  # the key store only, no --redis
        with trio.fail_after(20):
            for ws in opened:
                events = []
                while not events or events[-1]["type"] != "session_ended":
                    events.append(await recv(ws))
                assert events[-2]["code"] == "auth_failed"
                assert await closed_code(ws) == 4000
        nursery.cancel_scope.cancel()
    from slng_fast.gateway.redis_client import open_redis

    async with open_redis(redis_server.url) as redis:  # published for the other hosts
        assert await redis.execute("HEXISTS", "slng:revoked", key_id) == 1


async def test_a_killed_workers_usage_rows_are_closed_with_their_saved_totals(
        workers, tmp_path):
    from slng_fast.store import Store

    proc, url, free = workers
    text = "Counted before the crash."
    async with trio.open_nursery() as nursery:
        ws = await open_tts(nursery, url, free)
        await send(ws, type="init")
        await recv(ws)
        await send(ws, type="input_text", text=text)
        await send(ws, type="flush")
        while (event := await recv(ws))["type"] != "audio_end":
            pass
        spoken = event["total_duration_ms"]
        store = Store(tmp_path / "data")
        with trio.fail_after(20):  # saved every lease_ttl_s / 3 (2 s here) while it runs
            while not (round((row := store.usage_rows()[-1])["audio_ms"], 3) >= spoken
                       and row["characters"] == len(text)):
                await trio.sleep(0.1)
        assert row["ended_at"] is None
        busy = [pid for pid, n in (await pids_and_sessions(url)).items() if n == 1]
        assert len(busy) == 1 and row["worker"].endswith(f"-{busy[0]}")
        os.kill(busy[0], signal.SIGKILL)
        with trio.fail_after(30):  # closed by a live worker once the TTL has passed
            while (row := store.usage_rows()[-1])["ended_at"] is None:
                await trio.sleep(0.1)
        assert row["reason"] == "worker_lost" and row["ended_at"] == row["saved_at"]
        assert row["characters"] == len(text) and round(row["audio_ms"], 3) >= spoken
        store.close()
        nursery.cancel_scope.cancel()
