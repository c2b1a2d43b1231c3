"""`slng-fast serve --workers 2 --redis URL`: two worker processes on one port share the
engines, the keys and, through a real redis-server, the limits: the free tier's single
connection holds across workers, a worker killed with -9 leaks no slot and its ledger rows
are closed with their saved usage, and a revocation ends the key's sessions on every worker
(Redis killed and restarted under load is a case of tests/faults/). An engine killed
with -9 comes back where the workers reach it (its old port, or a new one they are told of),
and the Redis password is on no command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import orjson
import pytest
import trio
import trio_websocket

from harness import CLI, RedisServer, engine_pids, listening_ports, listening_url, worker_pids
from wsclient import auth, closed_code, recv, send


def start_workers(tmp_path: Path, redis_url: str | None,
                  extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, str]:
    """`serve --workers 2` (the Redis URL on its command line if given); the process, its
    URL and a free-tier key."""
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path / "data"), **(extra_env or {})}
    config = tmp_path / "gateway.toml"
    # The pro tier is for the tests that open many sessions one after the other.
    config.write_text("[gateway]\nlease_ttl_s = 2.0\n[tiers.pro]\nmessages_per_minute = 6000\n"
                      "max_connections = 50\n")
    free = create_key(tmp_path, "free")
    proc = subprocess.Popen(CLI + ["serve", "--port", "0", "--workers", "2", "--config",
                                   str(config)] + (["--redis", redis_url] if redis_url else []),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    return proc, listening_url(proc), free


def create_key(tmp_path: Path, tier: str) -> str:
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path / "data")}
    return subprocess.run(CLI + ["keys", "create", "--tier", tier], env=env, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def workers(tmp_path, redis_server):
    proc, url, free = start_workers(tmp_path, redis_server.url)
    yield proc, url, free
    stop(proc)


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


async def speaks(url: str, key: str) -> bool:
    """Whether a new espeak session through the gateway says a sentence to its end."""
    try:
        with trio.fail_after(20):
            async with trio_websocket.open_websocket_url(
                    f"{url}/v1/tts/espeak-websocket-stream", extra_headers=auth(key)) as ws:
                await send(ws, type="init")
                await send(ws, type="input_text", text="One two three.")
                await send(ws, type="flush")
                while True:
                    event = await recv(ws)
                    if event["type"] == "error":
                        return False
                    if event["type"] == "audio_end":
                        return event["total_duration_ms"] > 0 and not event["interrupted"]
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed,
            trio.TooSlowError):
        return False


async def speaks_again(url: str, key: str, in_a_row: int = 6) -> bool:
    """Whether, within the deadline, `in_a_row` new sessions one after the other all work
    (the kernel spreads them over both workers)."""
    with trio.move_on_after(60):
        good = 0
        while good < in_a_row:
            good = good + 1 if await speaks(url, key) else 0
            await trio.sleep(0 if good else 0.2)
        return True
    return False


async def restarted(gateway_pid: int, name: str, old_pid: int) -> int:
    """The pid of engine `name` once it has been restarted and listens."""
    with trio.fail_after(60):
        while True:
            pid = engine_pids(gateway_pid).get(name)
            if pid not in (None, old_pid) and listening_ports(pid):
                return pid
            await trio.sleep(0.1)


async def test_workers_reach_an_engine_restarted_after_kill_9_on_its_old_port(workers,
                                                                              tmp_path):
    proc, url, _ = workers
    key = create_key(tmp_path, "pro")
    assert await speaks(url, key)
    old = engine_pids(proc.pid)["espeak"]
    ports = listening_ports(old)
    os.kill(old, signal.SIGKILL)
    new = await restarted(proc.pid, "espeak", old)
    assert listening_ports(new) == ports
    assert await speaks_again(url, key)


async def test_workers_follow_an_engine_that_comes_back_on_a_new_port(workers, tmp_path):
    proc, url, _ = workers
    key = create_key(tmp_path, "pro")
    old = engine_pids(proc.pid)["espeak"]
    (port,) = listening_ports(old)
    os.kill(old, signal.SIGKILL)
    # Someone else listens on the engine's port before it is back: it takes another.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        with trio.fail_after(10):
            while True:
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:
                    await trio.sleep(0.01)
        squatter.listen(8)
        new = await restarted(proc.pid, "espeak", old)
        assert port not in listening_ports(new)
        assert await speaks_again(url, key)
    finally:
        squatter.close()


PASSWORD = "not-for-ps-9f3c"


@pytest.fixture
def redis_with_password(tmp_path):
    server = RedisServer(tmp_path, "--requirepass", PASSWORD)
    server.start()
    server.url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    yield server
    server.stop()


async def test_the_redis_password_reaches_the_workers_but_not_their_command_line(
        tmp_path, redis_with_password):
    proc, url, free = start_workers(tmp_path, redis_with_password.url)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(4):  # sessions need Redis: the workers got the password
                ws = await open_tts(nursery, url, free)
                await send(ws, type="ping")
                assert (await recv(ws))["type"] == "pong"
                await ws.aclose()
                await trio.sleep(0.1)
        pids = worker_pids(proc.pid)
        assert len(pids) == 2
        for pid in pids:
            assert PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        stop(proc)


async def test_serve_takes_the_redis_url_from_the_environment(tmp_path, redis_with_password):
    proc, url, free = start_workers(tmp_path, None,
                                    {"SLNG_FAST_REDIS_URL": redis_with_password.url})
    try:
        async with trio.open_nursery() as nursery:
            ws = await open_tts(nursery, url, free)
            await send(ws, type="ping")
            assert (await recv(ws))["type"] == "pong"
            await ws.aclose()
        for pid in [proc.pid, *worker_pids(proc.pid)]:
            assert PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        stop(proc)


async def test_every_worker_lists_the_engines_voices(workers):
    """The workers learn the engines' listings from the parent (engine_feed), so the
    catalogue is the same whichever worker answers."""
    _, url, free = workers
    host, port = url.removeprefix("ws://").split(":")
    for _ in range(10):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(f"GET /v1/voices?provider=espeak HTTP/1.1\r\nHost: x\r\n"
                              f"Authorization: Bearer {free}\r\nConnection: close\r\n\r\n"
                              .encode())
        data = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some(65536):
                data += chunk
        await stream.aclose()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        [espeak] = orjson.loads(body)["endpoints"]
        assert espeak["available"] and "en-us" in {v["id"] for v in espeak["voices"]}
