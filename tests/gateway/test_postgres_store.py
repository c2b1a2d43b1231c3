"""Keys and the usage ledger in a real PostgreSQL shared by several hosts: migrations
applied once when many start at once, shipping from the host's outbox that is idempotent,
the commands (`keys`, `usage`, `db migrate`) against it, and two gateways (each its own
data directory, two workers, one Redis) that share keys, revocations and one ledger,
through a PostgreSQL stopped mid-load and a worker killed with -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import trio
import trio_websocket

from faults.processes import GatewayProcess, open_ws
from gateway.test_observability import http_get
from harness import CLI, RedisServer, worker_pids
from pgserver import PostgresServer, postgres_server  # noqa: F401 - the fixture
from slng_fast.pg_store import MIGRATIONS, PostgresStore
from slng_fast.store import StoreUnavailable, UsageTotals
from wsclient import closed_code, recv, recv_until, send

TEXT = "One two three."


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.fresh_url()


def shared_rows(url: str, key_id: str) -> list[dict]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT * FROM slng_usage WHERE key_id = %s ORDER BY started_at",
                           (key_id,))
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
    env.pop("SLNG_FAST_DATABASE_URL", None)
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True,
                          timeout=60)


# -- the store ---------------------------------------------------------------------------

def test_migrations_apply_once_when_many_processes_start_at_once(pg_url, tmp_path):
    results: list[list[int]] = []

    def migrate(n: int) -> None:
        store = PostgresStore(pg_url, tmp_path / f"host{n}")
        try:
            results.append(store.migrate())
        finally:
            store.close()

    threads = [threading.Thread(target=migrate, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latest = [number for number, _ in MIGRATIONS]
    assert sorted(results) == [[]] * 5 + [latest]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM slng_schema").fetchall() == [(n,) for n in latest]


def test_shipping_is_idempotent_and_keeps_the_newest_totals(pg_url, tmp_path):
    a, b = PostgresStore(pg_url, tmp_path), PostgresStore(pg_url, tmp_path)  # two workers
    try:
        a.migrate()
        a.open_session("s1", "k1", "c1", "espeak", 1000.0, "w1", kind="tts", upstream="slng")
        a.save_usage([UsageTotals("s1", "c1", 5, 1500.0, 2)], 1001.0)
        shipped = []
        threads = [threading.Thread(target=lambda s=s: shipped.append(s.ship_usage(15)))
                   for s in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(shipped) >= 1 and a.ship_usage(15) == 0  # nothing left
        a.close_session("s1", context_id="c1", characters=14, audio_ms=2500.0, messages=3,
                        ended_at=1002.0, reason="client_closed")
        assert b.ship_usage(15) == 1
        # A worker that died between its upsert and noting it: the row ships again, and
        # an older version never overwrites a newer one.
        with sqlite3.connect(tmp_path / "slng-fast.db") as db:
            db.execute("UPDATE usage SET shipped_version = 0, version = 1")
        assert a.ship_usage(15) == 1
        (row,) = shared_rows(pg_url, "k1")
        assert row["characters"] == 14 and row["audio_out_s"] == 2.5 and row["audio_in_s"] == 0
        assert row["reason"] == "client_closed" and row["ended_at"] == 1002.0
        assert row["providers"] == ["slng"] and row["endpoint"] == "espeak"
        a.ship_usage(15)  # shipped and ended long ago: the host's copy goes
        assert a.usage_rows() == []
    finally:
        a.close()
        b.close()


def test_a_gone_hosts_open_rows_are_closed_in_the_shared_ledger(pg_url, tmp_path):
    gone, alive = PostgresStore(pg_url, tmp_path / "gone"), PostgresStore(pg_url, tmp_path / "b")
    try:
        gone.migrate()
        gone.open_session("s1", "k1", "c1", "espeak", 1000.0, "w1")
        gone.save_usage([UsageTotals("s1", "c1", 7, 0.0, 1)], 1010.0)
        gone.ship_usage(15)
        alive.ship_usage(15)  # another host's regular shipping closes it
        (row,) = shared_rows(pg_url, "k1")
        assert row["reason"] == "worker_lost" and row["ended_at"] == 1010.0
        assert row["characters"] == 7
    finally:
        gone.close()
        alive.close()


def test_a_process_started_while_the_database_is_away_knows_the_keys_its_host_knew(
        postgres_server, tmp_path):  # noqa: F811
    url = postgres_server.fresh_url()
    store = PostgresStore(url, tmp_path)
    store.migrate()
    _, secret = store.create_key("pro", "kept")
    assert store.authenticate(secret) is not None  # synced, and kept on the host
    store.close()
    postgres_server.stop()
    try:
        restarted = PostgresStore(url, tmp_path)
        assert restarted.authenticate(secret) is not None
        with pytest.raises(StoreUnavailable):  # an unknown key cannot be checked: 1011
            restarted.authenticate("slng_nosuch_secret")
        restarted.close()
    finally:
        postgres_server.start()


def test_the_commands_against_postgresql(pg_url, tmp_path):
    assert "applied migrations [1]" in cli("db", "migrate", "--database", pg_url,
                                           data_dir=tmp_path).stdout
    assert "up to date" in cli("db", "migrate", "--database", pg_url, data_dir=tmp_path).stdout
    created = cli("keys", "create", "--tier", "pro", "--name", "ci", "--database", pg_url,
                  data_dir=tmp_path / "host-a")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split()[2]
    listed = cli("keys", "list", "--database", pg_url, data_dir=tmp_path / "host-b")
    assert key_id in listed.stdout and "active" in listed.stdout
    assert cli("keys", "revoke", key_id, "--database", pg_url,
               data_dir=tmp_path / "host-b").returncode == 0
    assert "revoked" in cli("keys", "list", "--database", pg_url, data_dir=tmp_path).stdout
    store = PostgresStore(pg_url, tmp_path / "host-a")
    try:
        store.open_session("s1", key_id, "c1", "pocketsphinx", 1_800_000_000.0, "w1",
                           kind="stt", upstream="slng")
        store.close_session("s1", context_id="c1", characters=0, audio_ms=4000.0, messages=9,
                            ended_at=1_800_000_010.0, reason="client_closed")
        store.open_session("s0", key_id, "c0", "espeak", 1_700_000_000.0, "w1")
        store.ship_usage(15)
    finally:
        store.close()
    report = cli("usage", "--key", key_id, "--since", "2027-01-01", "--format", "json",
                 "--database", pg_url, data_dir=tmp_path)
    (row,) = json.loads(report.stdout)
    assert row["audio_in_s"] == 4.0 and row["audio_out_s"] == 0 and row["messages"] == 9
    assert row["started_at"] == "2027-01-15T08:00:00.000Z" and row["reason"] == "client_closed"
    csv_lines = cli("usage", "--key", key_id, "--database", pg_url,
                    data_dir=tmp_path).stdout.splitlines()
    assert csv_lines[0].startswith("session_id,key_id,endpoint,providers") and len(csv_lines) == 3


# -- two hosts, one PostgreSQL, one Redis -----------------------------------------------

@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hosts(postgres_server, redis_server, tmp_path_factory  # noqa: F811
          ) -> Iterator[tuple[str, GatewayProcess, GatewayProcess]]:
    """Two gateways, each with its own data directory and two workers, one database."""
    url = postgres_server.fresh_url()
    config = f"""
[gateway]
lease_ttl_s = 1.5
engines = ["espeak"]
database = "{url}"
[tiers.enterprise]
messages_per_minute = 60000
"""
    a = GatewayProcess(tmp_path_factory.mktemp("host-a"), config, workers=2,
                       redis_url=redis_server.url)
    b = GatewayProcess(tmp_path_factory.mktemp("host-b"), config, workers=2,
                       redis_url=redis_server.url)
    try:
        a.start()
        b.start()
        yield url, a, b
    finally:
        a.stop()
        b.stop()
    for gw in (a, b):
        assert [line for line in gw.unexpected_log_lines() if "PostgreSQL" not in line] == []


def new_key(url: str, gw: GatewayProcess, tier: str = "enterprise") -> tuple[str, str]:
    result = cli("keys", "create", "--tier", tier, "--database", url, data_dir=gw.data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[2], result.stdout.strip().splitlines()[-1]


async def ready(nursery, url: str, key: str) -> trio_websocket.WebSocketConnection:
    ws = await open_ws(nursery, url, key)
    await send(ws, type="init")
    event = await recv(ws)
    assert event["type"] == "ready", event
    return ws


async def say_once(nursery, url: str, key: str) -> None:
    ws = await ready(nursery, url, key)
    await send(ws, type="input_text", text=TEXT)
    await send(ws, type="flush")
    await recv_until(ws, "audio_end")
    await ws.aclose()


async def health_until(gw: GatewayProcess, database: str) -> None:
    """Ask ``/healthz`` (any worker) until it says ``database``; always status 200."""
    with trio.fail_after(30):  # hang guard
        while True:
            status, _, body = await http_get(gw.url, "/healthz")
            assert status == 200
            if orjson.loads(body)["database"] == database:
                return
            await trio.sleep(0.1)


async def ended_shared_rows(url: str, key_id: str, count: int) -> list[dict]:
    with trio.fail_after(60):  # hang guard
        while True:
            rows = await trio.to_thread.run_sync(shared_rows, url, key_id)
            if len(rows) >= count and all(r["ended_at"] is not None for r in rows):
                return rows
            await trio.sleep(0.2)


async def test_a_key_made_on_one_host_works_on_the_other_and_revocation_reaches_both(hosts):
    url, a, b = hosts
    key_id, key = new_key(url, a)
    async with trio.open_nursery() as nursery:
        # At once on the other host: an unknown secret syncs that worker's key cache.
        open_sessions = [await ready(nursery, gw.tts(), key) for gw in (b, a, b, a)]
        result = cli("keys", "revoke", key_id, "--database", url, data_dir=b.data_dir)
        assert result.returncode == 0, result.stderr
        with trio.fail_after(20):  # hang guard: each worker checks every 0.5 s
            for ws in open_sessions:
                events = await recv_until(ws, "session_ended")
                assert events[0]["code"] == "auth_failed"
                assert await closed_code(ws) == 4000
        for gw in (a, b, a, b):
            ws = await open_ws(nursery, gw.tts(), key)
            assert (await recv(ws))["code"] == "auth_failed"
            assert await closed_code(ws) == 4000
        nursery.cancel_scope.cancel()


async def test_usage_from_both_hosts_adds_up_through_a_database_outage(hosts,
                                                                      postgres_server):  # noqa: F811
    url, a, b = hosts
    key_id, key = new_key(url, a)
    made = {"a": 0, "b": 0}
    stop = trio.Event()

    async def load(gw: GatewayProcess, name: str) -> None:
        while not stop.is_set():
            await say_once(nursery, gw.tts(), key)  # never refused, outage or not
            made[name] += 1

    async with trio.open_nursery() as nursery:
        for gw, name in ((a, "a"), (b, "b"), (a, "a"), (b, "b")):
            nursery.start_soon(load, gw, name)
        while sum(made.values()) < 8:
            await trio.sleep(0.05)
        # Every process syncs its key cache every 0.5 s: after a few, all know the key
        # (one that never saw it would refuse it during the outage, with 1011).
        await trio.sleep(1.5)
        await trio.to_thread.run_sync(postgres_server.stop)
        during = sum(made.values())
        while sum(made.values()) < during + 12:  # sessions while the database is away
            await trio.sleep(0.05)
        await health_until(a, "failing")
        await trio.to_thread.run_sync(postgres_server.start)
        await health_until(a, "ok")
        while sum(made.values()) < during + 20:
            await trio.sleep(0.05)
        stop.set()
    total = sum(made.values())
    rows = await ended_shared_rows(url, key_id, total)
    assert len(rows) == total  # exactly once each
    assert sum(r["characters"] for r in rows) == total * len(TEXT)
    assert {r["reason"] for r in rows} == {"client_closed"}
    assert sorted({r["worker"].split("-")[0] for r in rows}) == ["w0", "w1"]
    assert all(r["audio_out_s"] > 0 for r in rows)


async def test_a_worker_killed_with_9_leaves_no_open_row_past_its_lease(hosts):
    url, a, _ = hosts
    key_id, key = new_key(url, a)
    async with trio.open_nursery() as nursery:
        sessions = []
        # The kernel spreads connections over the workers: open sessions until both have
        # some (the host's outbox says whose each row is).
        while len(sessions) < 4 or len({r["worker"] for r in a.rows()
                                        if r["key_id"] == key_id}) < 2:
            assert len(sessions) < 40
            sessions.append(await ready(nursery, a.tts(), key))
        for ws in sessions:
            await send(ws, type="input_text", text=TEXT)
        rows = await trio.to_thread.run_sync(shared_rows, url, key_id)
        with trio.fail_after(30):  # saved and shipped, with their characters
            while len(rows) < len(sessions) or any(r["characters"] != len(TEXT) for r in rows):
                await trio.sleep(0.1)
                rows = await trio.to_thread.run_sync(shared_rows, url, key_id)
        assert a.proc is not None
        victim = sorted(worker_pids(a.proc.pid))[0]
        os.kill(victim, signal.SIGKILL)
        victims = {r["session_id"] for r in rows if r["worker"].endswith(f"-{victim}")}
        assert victims
        with trio.fail_after(30):  # hang guard; closed one lease after the last save
            while True:
                rows = await trio.to_thread.run_sync(shared_rows, url, key_id)
                lost = [r for r in rows if r["session_id"] in victims]
                if all(r["ended_at"] is not None for r in lost):
                    break
                await trio.sleep(0.1)
        for row in lost:
            assert row["reason"] == "worker_lost" and row["ended_at"] == row["saved_at"]
            assert row["characters"] == len(TEXT)
        nursery.cancel_scope.cancel()
