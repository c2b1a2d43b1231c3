"""The usage ledger of a running gateway, over real sockets and a real SQLite file:
open sessions' totals are saved while they run, rows of a worker that is gone are
closed, an older data directory keeps working, a failing or locked database never
stalls other sessions, and a database error is a clear 1011."""

from __future__ import annotations

import sqlite3
import time

import trio

from harness import make_gateway, start_gateway
from slng_fast.config import Config
from slng_fast.store import Store
from wsclient import closed_code, connect, recv, recv_until, send

# Saves every 0.2 s; rows unsaved for 0.6 s are a lost worker's.
SHORT_TTL = 0.6


async def short_ttl_gateway(nursery, tmp_path, engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, lease_ttl_s=SHORT_TTL)
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))


async def row_where(store: Store, check, within_s: float = 20.0) -> dict:
    """Poll the ledger until a row satisfies ``check``; fail after ``within_s``."""
    with trio.move_on_after(within_s):
        while True:
            for row in store.usage_rows():
                if check(row):
                    return row
            await trio.sleep(0.05)
    raise AssertionError(f"no such ledger row within {within_s} s: {store.usage_rows()}")


async def test_an_open_sessions_usage_is_saved_while_it_runs(nursery, tmp_path, engines):
    gw = await short_ttl_gateway(nursery, tmp_path, engines)
    ws = await connect(gw.tts(query="?context_id=running"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="Saved while it runs.")
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    spoken = events[-1]["total_duration_ms"]
    row = await row_where(gw.store, lambda r: round(r["audio_ms"], 3) >= spoken)
    assert row["ended_at"] is None and row["context_id"] == "running"
    assert row["characters"] == len("Saved while it runs.") and row["messages"] == 3
    assert row["worker"] == gw.gateway.worker_id and row["saved_at"] >= row["started_at"]
    await ws.aclose()
    row = await row_where(gw.store, lambda r: r["ended_at"] is not None)
    assert row["reason"] == "client_closed" and round(row["audio_ms"], 3) >= spoken


async def test_rows_of_a_worker_that_is_gone_are_closed_with_their_saved_totals(
        nursery, tmp_path, engines):
    from slng_fast.store import UsageTotals

    gw = await short_ttl_gateway(nursery, tmp_path, engines)
    live = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(live, type="ping")
    assert (await recv(live))["type"] == "pong"
    # Another worker process wrote these rows and died: one saved a minute ago, one
    # never saved since it started.
    other = Store(tmp_path)
    now = time.time()
    other.open_session("saved", gw.key_ids["pro"], "c1", "espeak", now - 120, worker="w9-1")
    other.save_usage([UsageTotals("saved", "c1", 42, 1500.0, 7)], now - 60)
    other.open_session("never-saved", gw.key_ids["pro"], "c2", "espeak", now - 90,
                       worker="w9-1")
    other.close()
    saved = await row_where(gw.store, lambda r: r["session_id"] == "saved"
                            and r["reason"] == "worker_lost")
    assert saved["ended_at"] == saved["saved_at"] == now - 60
    assert (saved["characters"], saved["audio_ms"], saved["messages"]) == (42, 1500.0, 7)
    never = await row_where(gw.store, lambda r: r["session_id"] == "never-saved"
                            and r["reason"] == "worker_lost")
    assert never["ended_at"] == never["started_at"] == now - 90
    # The live session's row is the gateway's own, saved all along: still open.
    await send(live, type="ping")
    assert (await recv(live))["type"] == "pong"
    (mine,) = [r for r in gw.store.usage_rows() if r["worker"] == gw.gateway.worker_id]
    assert mine["ended_at"] is None and mine["saved_at"] is not None
    await live.aclose()


def test_a_data_directory_from_before_the_saved_totals_keeps_working(tmp_path):
    old = sqlite3.connect(tmp_path / "slng-fast.db")
    old.executescript("""
        CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
            tier TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
            revoked_at REAL);
        CREATE TABLE usage (session_id TEXT PRIMARY KEY, key_id TEXT NOT NULL,
            context_id TEXT NOT NULL, provider TEXT NOT NULL,
            characters INTEGER NOT NULL DEFAULT 0, audio_ms REAL NOT NULL DEFAULT 0,
            messages INTEGER NOT NULL DEFAULT 0, started_at REAL NOT NULL, ended_at REAL,
            reason TEXT);
        INSERT INTO usage (session_id, key_id, context_id, provider, characters, started_at)
            VALUES ('old', 'k', 'c', 'espeak', 5, 1000.0);
    """)
    old.close()
    store = Store(tmp_path)
    (row,) = store.usage_rows()
    assert row["worker"] == "" and row["saved_at"] is None and row["characters"] == 5
    assert store.close_crashed() == 1
    (row,) = store.usage_rows()
    assert row["reason"] == "crashed" and row["ended_at"] == 1000.0  # its last known time
    store.open_session("new", "k", "c", "espeak", 2000.0, worker="w0")
    store.close()
    assert len(Store(tmp_path).usage_rows()) == 2  # opening it again changes nothing


async def test_a_database_error_opening_a_session_is_internal_error_1011(gw, nursery, tmp_path):
    db = sqlite3.connect(tmp_path / "slng-fast.db")
    db.execute("CREATE TRIGGER no_room BEFORE INSERT ON usage "
               "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    db.commit()
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    events = await recv_until(ws, "session_ended")
    assert events[0]["type"] == "error" and events[0]["code"] == "internal_error"
    assert events[0]["retryable"] is True
    assert await closed_code(ws) == 1011
    # The key store cannot even be read: the same answer, at the handshake.
    db.execute("ALTER TABLE keys RENAME TO keys_elsewhere")
    db.commit()
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    event = await recv(ws)
    assert event["type"] == "error" and event["code"] == "internal_error"
    assert await closed_code(ws) == 1011
    db.close()


async def test_a_database_locked_by_another_process_stalls_no_session(gw, nursery, tmp_path):
    running = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(running, type="ping")
    assert (await recv(running))["type"] == "pong"
    holder = sqlite3.connect(tmp_path / "slng-fast.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
    try:
        # A new session's row waits for the lock (the store's 5 s busy timeout) ...
        waiting = await connect(gw.tts(), gw.keys["enterprise"], nursery=nursery)
        await send(waiting, type="ping")
        for _ in range(3):  # ... while the sessions already open go on answering
            await send(running, type="ping")
            assert (await recv(running))["type"] == "pong"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The lock was released within the timeout: the new session opened, nothing failed.
    assert (await recv(waiting))["type"] == "pong"
    await waiting.aclose()
    await running.aclose()


async def test_a_session_end_that_cannot_be_written_is_written_later(nursery, tmp_path, engines):
    gw = await short_ttl_gateway(nursery, tmp_path, engines)
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="input_text", text="Kept.")
    await recv(ws)  # ready
    db = sqlite3.connect(tmp_path / "slng-fast.db", isolation_level=None)
    db.execute("CREATE TRIGGER no_end BEFORE UPDATE OF ended_at ON usage "
               "WHEN NEW.ended_at IS NOT NULL BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    await ws.aclose()
    with trio.fail_after(10):
        while gw.gateway.active:
            await trio.sleep(0.05)
    (row,) = gw.store.usage_rows()
    assert row["ended_at"] is None  # the write failed (and so does closing it as lost)
    db.execute("DROP TRIGGER no_end")
    db.close()
    row = await row_where(gw.store, lambda r: r["ended_at"] is not None)
    assert row["reason"] == "client_closed" and row["characters"] == len("Kept.")


async def test_rows_written_while_a_write_runs_go_to_the_thread_together(tmp_path, monkeypatch):
    """Group commit (`Ledger.batched`): sessions that start or end while a write runs
    are written in one thread hand-off after it, each with its own outcome: an error
    reaches its own caller only."""
    from types import SimpleNamespace

    from slng_fast.gateway.ledger import Ledger

    handoffs: list[int] = []
    run_sync = trio.to_thread.run_sync

    async def counting(fn, *args, **kwargs):
        handoffs.append(len(args[0]) if args else 0)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    store = Store(tmp_path)
    ledger = Ledger(store, "w1", 30.0)
    n = 200
    failed: list[str] = []

    async def one(i: int) -> None:
        # s7 twice: whichever insert runs second breaks the primary key.
        session = SimpleNamespace(session_id=f"s{i}" if i < n else "s7", context_id=f"c{i}")
        try:
            await ledger.open(session, "k", "espeak", time.time())
        except sqlite3.IntegrityError:
            failed.append(session.context_id)

    async with trio.open_nursery() as nursery:
        for i in range(n + 1):
            nursery.start_soon(one, i)
    assert len(failed) == 1 and failed[0] in ("c7", f"c{n}")
    assert {r["session_id"] for r in store.usage_rows()} == {f"s{i}" for i in range(n)}
    assert sum(handoffs) == n + 1
    assert len(handoffs) < n // 4, handoffs  # most went in batches
