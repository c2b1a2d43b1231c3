"""A revoked key's open sessions end (unified: `error` auth_failed, `session_ended`, close
4000; native: close 4000) within seconds: on the host whose key store says so, and,
through a real redis-server, on other hosts."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from harness import CLI
from slng_fast.config import Config
from slng_fast.gateway.redis_client import open_redis
from slng_fast.gateway.run import open_limits
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store
from wsclient import closed_code, connect, recv, recv_until, send


async def ping(ws) -> None:
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"


async def test_a_revoked_keys_open_sessions_end_with_4000(gw, nursery, tmp_path):
    unified = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await ping(unified)
    native = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await native.send_message("Plain text makes this a native session. ")
    other = await connect(gw.tts(), gw.keys["enterprise"], nursery=nursery)
    await ping(other)
    Store(tmp_path).revoke_key(gw.key_ids["pro"])  # as `slng-fast keys revoke` does
    with trio.fail_after(15):  # checked every second
        events = await recv_until(unified, "session_ended")
        assert [e["type"] for e in events] == ["error", "session_ended"]
        assert events[0]["code"] == "auth_failed" and events[0]["retryable"] is False
        assert events[1]["reason"] == "error"
        assert await closed_code(unified) == 4000
        assert await closed_code(native) == 4000
    await ping(other)  # another key's session goes on
    await other.aclose()
    rows = [r for r in gw.store.usage_rows() if r["key_id"] == gw.key_ids["pro"]]
    with trio.fail_after(10):
        while len(rows) < 2 or any(r["ended_at"] is None for r in rows):
            await trio.sleep(0.05)
            rows = [r for r in gw.store.usage_rows() if r["key_id"] == gw.key_ids["pro"]]
    assert {r["reason"] for r in rows} == {"error"}


# -- two hosts, one Redis ---------------------------------------------------------------


@asynccontextmanager
async def host(nursery, data_dir: Path, redis_url: str, engines, name: str):
    """A gateway process of its own host: its own key store, the shared Redis."""
    urls, info = engines
    config = Config(data_dir=data_dir, lease_ttl_s=1.5)  # renewals every 0.5 s
    store = Store(data_dir)
    async with open_limits(redis_url, name, config.lease_ttl_s) as limits:
        gateway = Gateway(config=config, store=store, registry=ProviderRegistry(
            config, urls, info, environ={}), limits=limits, worker_id=name)
        async with trio.open_nursery() as inner:
            port = await inner.start(serve_gateway, gateway, "127.0.0.1", 0)
            yield f"ws://127.0.0.1:{port}/v1/tts/espeak-websocket-stream"
            inner.cancel_scope.cancel()
    store.close()


async def test_a_revocation_on_one_host_ends_sessions_on_another(nursery, tmp_path, engines,
                                                                 redis_server):
    a_dir, b_dir = tmp_path / "host-a", tmp_path / "host-b"
    store = Store(a_dir)
    _, secret = store.create_key("pro", "shared")
    key_id = store.list_keys()[0].id
    store.close()
    b_dir.mkdir()
    with sqlite3.connect(a_dir / "slng-fast.db") as src, \
            sqlite3.connect(b_dir / "slng-fast.db") as dst:
        src.backup(dst)  # the hosts were given the same keys
    async with host(nursery, a_dir, redis_server.url, engines, "host-a"), \
            host(nursery, b_dir, redis_server.url, engines, "host-b") as b_url:
        on_b = await connect(b_url, secret, nursery=nursery)
        await ping(on_b)
        assert Store(a_dir).revoke_key(key_id)  # `keys revoke` on host A only
        with trio.fail_after(15):
            events = await recv_until(on_b, "session_ended")
            assert events[0]["code"] == "auth_failed"
            assert await closed_code(on_b) == 4000
        again = await connect(b_url, secret, nursery=nursery)  # B's own store has it live
        assert (await recv(again))["code"] == "auth_failed"
        assert await closed_code(again) == 4000


def test_keys_revoke_with_redis_publishes_the_revocation(tmp_path, redis_server):
    store = Store(tmp_path)
    key, _ = store.create_key("free", "gone")
    store.close()
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path)}
    for _ in range(2):  # revoked, then published again (already revoked)
        result = subprocess.run(CLI + ["keys", "revoke", key.id, "--redis", redis_server.url],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "published" in result.stdout

    async def published() -> tuple[int, float]:
        async with open_redis(redis_server.url) as redis:
            exists = await redis.execute("HEXISTS", "slng:revoked", key.id)
            at = await redis.execute("HGET", "slng:revoked", key.id)
        return exists, float(at)

    exists, at = trio.run(published)
    assert exists == 1 and at == Store(tmp_path).revoked_at(key.id)
    result = subprocess.run(CLI + ["keys", "revoke", "nosuch", "--redis", redis_server.url],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no active key" in result.stderr
