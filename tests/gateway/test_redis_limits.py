"""The Redis client and the shared limits against a real redis-server: two RedisLimits
on two clients stand for two gateway workers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from slng_fast.config import DEFAULT_TIERS
from slng_fast.gateway.redis_client import RedisUnavailable, Script, open_redis
from slng_fast.gateway.shared_limits import LeaseKeeper, RedisLimits
from slng_fast.resp import RespError

PRO = DEFAULT_TIERS["pro"]
REPO = Path(__file__).resolve().parents[2]


from harness import RedisServer, free_port


@pytest.fixture
async def redis(redis_server):
    async with open_redis(redis_server.url) as client:
        yield client


@pytest.fixture
async def two_workers(redis_server):
    """Two RedisLimits, each with its own connection, like two gateway processes."""
    async with open_redis(redis_server.url) as a, open_redis(redis_server.url) as b:
        yield RedisLimits(a, lease_ttl_s=15), RedisLimits(b, lease_ttl_s=15)


async def eventually(check, within_s: float = 5.0, every_s: float = 0.05):
    """Poll the async `check` until it is true; fail after `within_s`."""
    with trio.move_on_after(within_s):
        while not await check():
            await trio.sleep(every_s)
        return
    pytest.fail(f"not true within {within_s} s")


# -- the client ---------------------------------------------------------------------


async def test_commands_pipeline_and_errors(redis):
    assert await redis.execute("SET", "k", "v") == "OK"
    assert await redis.execute("GET", "k") == b"v"
    assert await redis.execute("GET", "missing") is None
    with pytest.raises(RespError) as err:
        await redis.execute("INCR", "k")
    assert err.value.kind == "ERR"
    assert await redis.pipeline([("INCR", "n"), ("INCR", "k"), ("INCR", "n")]) == [
        1, RespError("ERR value is not an integer or out of range"), 2]
    assert await redis.execute("RPUSH", "l", "a", "b") == 2
    assert await redis.execute("LRANGE", "l", 0, -1) == [b"a", b"b"]


async def test_many_tasks_share_one_connection(redis):
    results: dict[int, object] = {}

    async def worker(i: int) -> None:
        await redis.execute("SET", f"k{i}", i)
        results[i] = await redis.execute("GET", f"k{i}")

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(worker, i)
    assert results == {i: str(i).encode() for i in range(200)}


async def test_evalsha_loads_the_script_when_redis_does_not_know_it(redis):
    script = Script("return {KEYS[1], ARGV[1]}")
    assert await redis.evalsha(script, ["a"], ["b"]) == [b"a", b"b"]
    await redis.execute("SCRIPT", "FLUSH")
    assert await redis.evalsha(script, ["c"], [1]) == [b"c", b"1"]


async def test_timeout_is_unavailable_and_the_next_call_reconnects(redis):
    with pytest.raises(RedisUnavailable, match="did not answer"):
        await redis.execute("BLPOP", "nothing", 5, timeout=0.2)
    assert await redis.execute("PING") == "PONG"


async def test_cancelled_caller_does_not_shift_replies(redis):
    await redis.execute("SET", "x", "1")
    with trio.move_on_after(0.05):
        await redis.execute("BLPOP", "nothing", 0.3)  # reply arrives after we left
    await redis.execute("SET", "y", "2")
    assert await redis.execute("GET", "x") == b"1"
    assert await redis.execute("GET", "y") == b"2"


async def test_password_and_database_from_url(tmp_path):
    server = RedisServer(tmp_path, "--requirepass", "s3cret")
    server.start()
    try:
        async with open_redis(f"redis://:s3cret@127.0.0.1:{server.port}/2") as redis:
            await redis.execute("SET", "k", "in-db-2")
            assert await redis.execute("CLIENT", "INFO") is not None
        async with open_redis(f"redis://:s3cret@127.0.0.1:{server.port}/0") as redis:
            assert await redis.execute("GET", "k") is None
            await redis.execute("SELECT", 2)
            assert await redis.execute("GET", "k") == b"in-db-2"
        async with open_redis(f"redis://:wrong@127.0.0.1:{server.port}") as redis:
            with pytest.raises(RedisUnavailable, match="AUTH"):
                await redis.execute("PING")
    finally:
        server.stop()


async def test_unreachable_is_redis_unavailable():
    async with open_redis(f"redis://127.0.0.1:{free_port()}") as redis:
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await redis.execute("PING")
    with pytest.raises(ValueError):
        async with open_redis("http://example"):
            pass


async def test_username_and_password_from_url(tmp_path):
    server = RedisServer(tmp_path, "--user", "default", "off", "--user", "gateway", "on",
                         ">p@ss:word", "~*", "&*", "+@all")
    server.start()
    try:
        async with open_redis(f"redis://gateway:p%40ss%3Aword@127.0.0.1:{server.port}") as redis:
            assert await redis.execute("ACL", "WHOAMI") == b"gateway"
        async with open_redis(f"redis://gateway:wrong@127.0.0.1:{server.port}") as redis:
            with pytest.raises(RedisUnavailable, match="AUTH"):
                await redis.execute("PING")
    finally:
        server.stop()


async def test_rediss_is_redis_over_tls_verified_by_the_default_context(tmp_path, monkeypatch):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls_port = free_port()
    server = RedisServer(tmp_path, "--tls-port", str(tls_port),
                         "--tls-cert-file", str(tmp_path / "server.pem"),
                         "--tls-key-file", str(tmp_path / "server.pem"),
                         "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
                         "--tls-auth-clients", "no", "--requirepass", "s3cret")
    server.start()
    try:
        # Not trusted yet: the certificate is refused, as Redis being unreachable.
        async with open_redis(f"rediss://:s3cret@127.0.0.1:{tls_port}/1") as redis:
            with pytest.raises(RedisUnavailable, match="rediss://127.0.0.1"):
                await redis.execute("PING")
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        async with open_redis(f"rediss://:s3cret@127.0.0.1:{tls_port}/1") as redis:
            assert await redis.execute("SET", "k", "over-tls") == "OK"
            info = await redis.execute("CLIENT", "INFO")
            assert b"db=1" in info
        async with open_redis(f"redis://:s3cret@127.0.0.1:{server.port}/1") as redis:
            assert await redis.execute("GET", "k") == b"over-tls"  # the same server
    finally:
        server.stop()


# -- connection leases --------------------------------------------------------------


async def test_connection_limit_exact_across_two_workers(two_workers):
    a, b = two_workers
    tier = replace(PRO, max_connections=3)
    assert await a.acquire_connection("key1", tier, "a1")
    assert await b.acquire_connection("key1", tier, "b1")
    assert await a.acquire_connection("key1", tier, "a2")
    assert not await b.acquire_connection("key1", tier, "b2")
    assert not await a.acquire_connection("key1", tier, "a3")
    assert await a.acquire_connection("key1", tier, "a1")  # the same lease again: no new slot
    assert await a.acquire_connection("other", tier, "a4")  # per key
    assert await b.connections("key1") == 3
    await a.release_connection("key1", "a2")
    assert await b.acquire_connection("key1", tier, "b2")
    assert not await a.acquire_connection("key1", tier, "a5")
    assert set(a.leases) == {"a1", "a4"} and set(b.leases) == {"b1", "b2"}


async def test_concurrent_acquires_never_exceed_the_limit(two_workers):
    a, b = two_workers
    tier = replace(PRO, max_connections=7)
    won: list[str] = []

    async def try_one(limits: RedisLimits, lease: str) -> None:
        if await limits.acquire_connection("busy", tier, lease):
            won.append(lease)

    async with trio.open_nursery() as nursery:
        for i in range(60):
            nursery.start_soon(try_one, a if i % 2 else b, f"lease{i}")
    assert len(won) == 7
    assert await a.connections("busy") == 7


async def test_leases_of_a_worker_that_stops_renewing_expire(redis_server):
    tier = replace(PRO, max_connections=1)
    async with open_redis(redis_server.url) as ra, open_redis(redis_server.url) as rb:
        a, b = RedisLimits(ra, lease_ttl_s=0.5), RedisLimits(rb, lease_ttl_s=0.5)
        async with trio.open_nursery() as nursery:
            keeper = trio.CancelScope()

            async def keep() -> None:
                with keeper:
                    await LeaseKeeper(a).run()

            nursery.start_soon(keep)
            assert await a.acquire_connection("k", tier, "a1")
            await trio.sleep(1.1)  # more than two TTLs: renewed, still held
            assert not await b.acquire_connection("k", tier, "b1")
            keeper.cancel()  # the worker stops renewing (as if it died)
            await eventually(lambda: b.acquire_connection("k", tier, "b1"))


async def test_kill_9_frees_the_slot(redis_server):
    """A real worker process holding a lease is killed: its slot comes back."""
    code = textwrap.dedent(f"""
        import trio
        from slng_fast.config import DEFAULT_TIERS
        from dataclasses import replace
        from slng_fast.gateway.redis_client import open_redis
        from slng_fast.gateway.shared_limits import LeaseKeeper, RedisLimits
        async def main():
            async with open_redis({redis_server.url!r}) as redis:
                limits = RedisLimits(redis, lease_ttl_s=1.0)
                tier = replace(DEFAULT_TIERS["pro"], max_connections=1)
                assert await limits.acquire_connection("k", tier, "doomed")
                print("held", flush=True)
                await LeaseKeeper(limits).run()
        trio.run(main)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line == b"held\n"
        async with open_redis(redis_server.url) as redis:
            limits = RedisLimits(redis)
            tier = replace(PRO, max_connections=1)
            await trio.sleep(2.1)  # past two TTLs: the live worker keeps its slot
            assert not await limits.acquire_connection("k", tier, "mine")
            proc.kill()
            proc.wait()
            await eventually(lambda: limits.acquire_connection("k", tier, "mine"))
    finally:
        proc.kill()
        proc.wait()


# -- the message bucket -------------------------------------------------------------


async def test_bucket_allows_capacity_then_waits_then_refills(two_workers):
    a, _ = two_workers
    tier = replace(PRO, messages_per_minute=6)  # 6 tokens, one every 10 s
    t0 = 1_000_000
    assert [await a.take_message("k", tier, t0) for _ in range(6)] == [0.0] * 6
    assert await a.take_message("k", tier, t0) == pytest.approx(10.0)
    assert await a.take_message("k", tier, t0 + 4_000) == pytest.approx(6.0)
    assert await a.take_message("k", tier, t0 + 10_000) == 0.0
    assert await a.take_message("k", tier, t0 + 10_000) == pytest.approx(10.0)
    # A long idle refills to capacity and no further.
    later = t0 + 3_600_000
    assert [await a.take_message("k", tier, later) for _ in range(7)] == [0.0] * 6 + [
        pytest.approx(10.0)]


async def test_bucket_is_shared_by_two_workers(two_workers):
    a, b = two_workers
    tier = replace(PRO, messages_per_minute=10)
    t0 = 5_000_000
    for _ in range(5):
        assert await a.take_message("k", tier, t0) == 0.0
        assert await b.take_message("k", tier, t0) == 0.0
    assert await a.take_message("k", tier, t0) > 0
    assert await b.take_message("k", tier, t0) > 0
    assert await a.take_message("other", tier, t0) == 0.0


async def test_bucket_concurrent_takes_allow_exactly_capacity(two_workers):
    a, b = two_workers
    tier = replace(PRO, messages_per_minute=20)
    waits: list[float] = []

    async def take(limits: RedisLimits) -> None:
        waits.append(await limits.take_message("k", tier, 7_000_000))

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(take, a if i % 2 else b)
    assert waits.count(0.0) == 20 and len(waits) == 100


async def test_bucket_on_the_redis_clock(two_workers):
    a, b = two_workers
    tier = replace(PRO, messages_per_minute=120)  # two tokens a second
    for _ in range(60):
        assert await a.take_message("k", tier) == 0.0
        assert await b.take_message("k", tier) == 0.0
    wait = await a.take_message("k", tier)
    assert 0 < wait <= 0.5
    await trio.sleep(wait)
    await eventually(lambda: _allowed(b, "k", tier))


async def _allowed(limits: RedisLimits, key: str, tier) -> bool:
    return await limits.take_message(key, tier) == 0.0


# -- Redis going away and coming back -----------------------------------------------


async def test_redis_down_is_unhealthy_then_recovers(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="slng_fast.limits")
    tier = replace(PRO, max_connections=2, messages_per_minute=3)
    async with open_redis(redis_server.url, timeout=1.0) as redis:
        limits = RedisLimits(redis, lease_ttl_s=1.5, retry_s=0.1)  # restore_s: 0.6 s
        await limits.check()
        assert await limits.acquire_connection("k", tier, "open-session")
        redis_server.stop()

        with pytest.raises(RedisUnavailable):
            await limits.acquire_connection("k", tier, "new-session")
        assert not limits.healthy
        assert "refusing new sessions with 1013" in caplog.text
        # The open session goes on, limited by this process's own bucket.
        assert [await limits.take_message("k", tier) for _ in range(3)] == [0.0] * 3
        assert await limits.take_message("k", tier) > 0
        with pytest.raises(RedisUnavailable):
            await limits.renew()

        redis_server.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(LeaseKeeper(limits, interval_s=5).run)
            await eventually(lambda: _healthy(limits))  # the keeper probes while down
            nursery.cancel_scope.cancel()
        assert "reachable again" in caplog.text
        # The restarted Redis lost the lease; the renewal put the open session back.
        assert await limits.connections("k") == 1
        # It lost the epoch marker too: new sessions wait while every worker restores
        # its leases (one renewal interval and a retry), then the limit is exact.
        with pytest.raises(RedisUnavailable, match="restoring"):
            await limits.acquire_connection("k", tier, "new-session")
        assert "lost its data" in caplog.text and limits.healthy
        async with trio.open_nursery() as nursery:  # renewed as a running worker does
            nursery.start_soon(LeaseKeeper(limits, interval_s=0.2).run)
            await eventually(lambda: _acquired(limits, "k", tier, "new-session"), within_s=30)
            nursery.cancel_scope.cancel()
        assert not await limits.acquire_connection("k", tier, "third")
        await limits.release_connection("k", "new-session")
        await limits.release_connection("k", "open-session")
        assert await limits.connections("k") == 0


async def _acquired(limits: RedisLimits, key: str, tier, lease: str) -> bool:
    try:
        return await limits.acquire_connection(key, tier, lease)
    except RedisUnavailable:
        return False


async def _healthy(limits: RedisLimits) -> bool:
    return limits.healthy


async def test_release_while_redis_is_down_does_not_raise(redis_server):
    tier = replace(PRO, max_connections=1)
    async with open_redis(redis_server.url, timeout=1.0) as redis:
        limits = RedisLimits(redis)
        assert await limits.acquire_connection("k", tier, "s1")
        redis_server.stop()
        await limits.release_connection("k", "s1")
        assert limits.leases == {}


# -- revocation ---------------------------------------------------------------------


async def test_revocation_is_seen_by_the_other_worker(two_workers):
    a, b = two_workers
    assert not await b.revoked("key1")
    assert await b.acquire_connection("key1", PRO, "b-open")
    assert await b.acquire_connection("key2", PRO, "b-other")
    await a.revoke("key1")
    assert await b.revoked("key1")  # a new session is refused at once
    seen: list[set[str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(LeaseKeeper(b, interval_s=0.05, on_revoked=seen.append).run)
        await eventually(lambda: _nonempty(seen))
        nursery.cancel_scope.cancel()
    assert seen[0] == {"key1"}  # open sessions of key1 are ended by the gateway


async def _nonempty(items: list) -> bool:
    return bool(items)
