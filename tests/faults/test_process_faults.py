"""Faults of the processes around a session, and of its client: Redis killed and
restarted under load, or restarted empty under a full key; the gateway killed with -9 or
stopped with SIGTERM while sessions are open (one process, or workers, or the parent of
workers killed); a client that stops reading, one whose connection is reset or
half-closed without a close frame, one that goes silent. Real `slng-fast serve`
processes, a real redis-server, real sockets; each case's outcome is a row of
docs/decisions.md ("Processes, Redis and clients")."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio
import trio_websocket

from faults.processes import (
    GatewayProcess,
    RawClient,
    accepted_again,
    first_event,
    open_ws,
    zombie,
)
from harness import worker_pids
from slng_fast.gateway.redis_client import open_redis
from slng_fast.gateway.shared_limits import RedisLimits
from wsclient import closed_code, recv, recv_until, send

TTS_PATH = "/v1/tts/espeak-websocket-stream"
SENTENCE = "One two three four five."
# About half a minute of speech: still being said whenever the fault strikes.
LONG_TEXT = ("This sentence is long enough to take a while to say out loud. " * 8)[:480]
SPEECH_16K = bytes(16000 * 2)  # one second of silence, PCM16 at 16 kHz


async def ended_rows(gw: GatewayProcess, key_id: str) -> list[dict]:
    """The key's usage rows, once every one of them is closed (hang-guarded)."""
    with trio.fail_after(30):
        while True:
            rows = [r for r in gw.rows() if r["key_id"] == key_id]
            if rows and all(r["ended_at"] is not None for r in rows):
                return rows
            await trio.sleep(0.1)


# -- Redis killed and restarted under load --------------------------------------------

WORKERS_CONFIG = """
[gateway]
lease_ttl_s = 2.0
[tiers.free]
messages_per_minute = 6000
[tiers.enterprise]
messages_per_minute = 6000
"""


async def speak_until(ws, stop: trio.Event, said: list[str], phase: list[str]) -> None:
    """Say SENTENCE again and again on one session; each whole utterance is noted under
    the phase it ended in, and "stopped" once the loop is done."""
    while not stop.is_set():
        await send(ws, type="input_text", text=SENTENCE)
        await send(ws, type="flush")
        events = await recv_until(ws, "audio_end")
        assert not events[-1]["interrupted"] and events[-1]["total_duration_ms"] > 0
        said.append(phase[0])
    said.append("stopped")


async def arrive_until(nursery, gw: GatewayProcess, key: str, stop: trio.Event,
                       seen: list[tuple[str, str, dict, int | None]], phase: list[str]) -> None:
    """New sessions, one after the other: (phase at start, phase at end, first event,
    close code) for each."""
    while not stop.is_set():
        started = phase[0]
        event, code = await first_event(nursery, gw.tts(), key)
        seen.append((started, phase[0], event, code))
        await trio.sleep(0.05)


async def open_until_ready(nursery, url: str, key: str, retry_on: int):
    """A TTS session that has said `ready`, retrying refusals closed with `retry_on`."""
    while True:
        ws = await open_ws(nursery, url, key)
        try:
            await send(ws, type="init")
        except trio_websocket.ConnectionClosed:
            pass  # refused before it was sent: the refusal is still to be read
        event = await recv(ws)
        if event["type"] == "ready":
            return ws
        assert await closed_code(ws) == retry_on, event


async def test_redis_killed_and_restarted_under_load(tmp_path, redis_server):
    gw = GatewayProcess(tmp_path, WORKERS_CONFIG, workers=2, redis_url=redis_server.url).start()
    try:
        load_id, load_key = gw.key("enterprise", "load")
        one_id, one_key = gw.key("free", "one-connection")
        phase = ["up"]
        said: list[list[str]] = [[] for _ in range(4)]
        arrivals: list[tuple[str, str, dict, int | None]] = []
        stop = trio.Event()

        async def until(check, within: float = 60) -> None:
            with trio.fail_after(within):
                while not check():
                    await trio.sleep(0.05)

        def arrived(in_phase: str, kind: str) -> bool:
            return any(a[0] == a[1] == in_phase and a[2]["type"] == kind for a in arrivals)

        def all_said(in_phase: str) -> bool:
            return all(in_phase in s for s in said)

        async with trio.open_nursery() as nursery:
            streams = []
            for n in range(4):
                ws = await open_ws(nursery, gw.tts(f"?context_id=stream-{n}"), load_key)
                await send(ws, type="init")
                assert (await recv(ws))["type"] == "ready"
                streams.append(ws)
                nursery.start_soon(speak_until, ws, stop, said[n], phase)
            # One session ends while Redis is down: its release cannot reach Redis.
            leaver = await open_ws(nursery, gw.tts("?context_id=leaver"), load_key)
            await send(leaver, type="init")
            assert (await recv(leaver))["type"] == "ready"
            nursery.start_soon(arrive_until, nursery, gw, load_key, stop, arrivals, phase)
            await until(lambda: all_said("up") and arrived("up", "ready"))

            redis_server.stop()  # SIGKILL
            phase[0] = "down"
            await until(lambda: all_said("down") and arrived("down", "error"))
            await leaver.aclose()

            redis_server.start()  # empty: the leases of the open sessions are gone
            phase[0] = "back"
            await until(lambda: all_said("back") and arrived("back", "ready"))
            stop.set()
            await until(lambda: all("stopped" in s for s in said))
            for ws in streams:
                await ws.aclose()

            # Limits exact after the restart: a one-connection key gets exactly one.
            with trio.fail_after(30):  # a worker may still be restoring leases: 1013
                held = await open_until_ready(nursery, gw.tts(), one_key, retry_on=1013)
            full = 0
            with trio.fail_after(30):
                while full < 6:  # whichever worker takes it: full, or still restoring
                    event, code = await first_event(nursery, gw.tts(), one_key)
                    assert code in (1013, 4001), (event, code)
                    full += code == 4001
            await held.aclose()
            with trio.fail_after(30):
                refusals = await accepted_again(nursery, gw.tts(), one_key)
            assert set(refusals) <= {"too_many_connections", "internal_error"}
            nursery.cancel_scope.cancel()

        up = [a for a in arrivals if a[0] == a[1] == "up"]
        down = [a for a in arrivals if a[0] == a[1] == "down"]
        assert up and all(a[2]["type"] == "ready" for a in up)
        # While Redis is down every new session is refused as the contract says, retryable.
        assert down and all(a[2]["type"] == "error" and a[2]["code"] == "internal_error"
                            and a[2]["retryable"] is True and a[3] == 1013 for a in down)
        # After it is back, refusals (until the workers notice) are the same kind.
        back = [a for a in arrivals if a[1] == "back"]
        assert all(a[2]["type"] == "ready" or a[3] == 1013 for a in back)

        # No lease leaked: once every session is over, each key holds no connection.
        async with open_redis(redis_server.url) as redis:
            limits = RedisLimits(redis)
            with trio.fail_after(30):
                while (await limits.connections(load_id), await limits.connections(one_id)) \
                        != (0, 0):
                    await trio.sleep(0.1)
        rows = await ended_rows(gw, load_id)
        streamed = {r["context_id"]: r for r in rows if str(r["context_id"]).startswith("stream")}
        assert len(streamed) == 4 and streamed.keys() == {f"stream-{n}" for n in range(4)}
        (left,) = [r for r in rows if r["context_id"] == "leaver"]
        assert left["reason"] == "client_closed"
        assert all(r["reason"] == "client_closed" and r["characters"] >= 3 * len(SENTENCE)
                   for r in streamed.values())
        # The log says why once per worker, not once per refused session.
        errors = [line for line in gw.log.read_text().splitlines()
                  if '"level": "error"' in line]
        assert len(errors) <= 2 and all("limits backend unreachable" in e for e in errors), \
            errors[:3]
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []


async def test_a_limit_holds_while_redis_comes_back_empty(tmp_path, redis_server):
    """Redis restarted quickly, the open sessions' leases lost with it: until every
    worker has renewed its leases, a full key must not be given more. New sessions are
    refused (1013, as while it was down) or find the key full (4001), never accepted."""
    gw = GatewayProcess(tmp_path, WORKERS_CONFIG, workers=2, redis_url=redis_server.url).start()
    try:
        _, one_key = gw.key("free", "one-connection")
        async with trio.open_nursery() as nursery:
            held = await open_ws(nursery, gw.tts(), one_key)
            await send(held, type="init")
            assert (await recv(held))["type"] == "ready"
            redis_server.stop()
            redis_server.start()  # empty
            seen: list[tuple[str, int | None]] = []
            # For two lease TTLs (2 s here), when the renewals are long done, and on
            # until the key is found full.
            watch_until = trio.current_time() + 4.0
            with trio.fail_after(60):
                while trio.current_time() < watch_until or seen[-1][1] != 4001:
                    event, code = await first_event(nursery, gw.tts(), one_key)
                    seen.append((event.get("code", event["type"]), code))
                    assert code in (1013, 4001), seen
            await send(held, type="ping")  # the held session went on throughout
            assert (await recv(held))["type"] == "pong"
            await held.aclose()
            nursery.cancel_scope.cancel()
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []


# -- clients that stop reading, vanish, or go silent ----------------------------------

CLIENTS_CONFIG = """
[gateway]
slow_client_timeout_s = 2.0
[tiers.free]
heartbeat_s = 1.0
messages_per_minute = 6000
[tiers.pro]
max_connections = 1
messages_per_minute = 6000
[tiers.enterprise]
messages_per_minute = 6000
"""


@pytest.fixture(scope="module")
def clients_gateway(tmp_path_factory) -> Iterator[GatewayProcess]:
    """One gateway for the client cases; each case makes its own keys. Free keys ping
    every second; pro keys have one connection."""
    gw = GatewayProcess(tmp_path_factory.mktemp("clients"), CLIENTS_CONFIG).start()
    yield gw
    gw.stop()
    assert gw.unexpected_log_lines() == []


async def row_of(gw: GatewayProcess, context_id: str) -> dict:
    """The usage row of the session `context_id`, once it is closed (hang-guarded)."""
    with trio.fail_after(30):
        while True:
            rows = [r for r in gw.rows() if r["context_id"] == context_id]
            if rows and rows[0]["ended_at"] is not None:
                (row,) = rows
                return row
            await trio.sleep(0.1)


async def audio_arrives(client: RawClient) -> None:
    """Read until the first audio chunk: the utterance is under way."""
    while (await client.event())["type"] != "audio_chunk":
        pass


async def stalled_client(gw: GatewayProcess, key: str, context_id: str,
                         texts: tuple[str, ...] = (LONG_TEXT,)) -> RawClient:
    """A session asked for much speech by a client with a small receive buffer that
    then reads nothing."""
    client = await RawClient.connect(gw.url, f"{TTS_PATH}?context_id={context_id}", key,
                                     rcvbuf=4096)
    client.send_json(type="init", sample_rate_hz=48000)
    assert (await client.event())["type"] == "ready"
    for text in texts:
        client.send_json(type="input_text", text=text)
    client.send_json(type="flush")
    with trio.fail_after(30):
        await client.stalled()
    return client


async def test_a_client_that_stops_reading_is_dropped_its_slot_freed_others_go_on(
        clients_gateway, nursery):
    gw = clients_gateway
    stalled_id, stalled_key = gw.key("pro", "stalled")  # one connection
    _, other_key = gw.key("enterprise", "others")
    # About eight minutes of speech, in four messages (the pro tier's 2,000 characters).
    texts = (("This sentence is long enough to take a while to say out loud. " * 40)[:1900],) * 4
    stalled = await stalled_client(gw, stalled_key, "stalled", texts)
    pinging = await open_ws(nursery, gw.tts(), other_key)
    speaking = await open_ws(nursery, gw.tts(), other_key)
    for ws in (pinging, speaking):
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
    # While the stalled session is stuck, the others speak (the same engine) and answer.
    await send(speaking, type="input_text", text=SENTENCE)
    await send(speaking, type="flush")
    assert (await recv_until(speaking, "audio_end"))[-1]["interrupted"] is False
    answered = 0
    with trio.fail_after(30):
        while not [r for r in gw.rows() if r["context_id"] == "stalled" and r["ended_at"]]:
            await send(pinging, type="ping")  # the other sessions answer throughout
            assert (await recv(pinging))["type"] == "pong"
            answered += 1
            await trio.sleep(0.2)
    row = await row_of(gw, "stalled")
    assert answered >= 1
    assert row["reason"] == "slow_client" and row["characters"] == 4 * 1900
    # What it took from the engine is bounded: far less than the speech it asked for.
    assert row["audio_ms"] < 240_000
    # Its one slot is free again.
    event, code = await first_event(nursery, gw.tts(), stalled_key)
    assert event["type"] == "ready", (event, code)
    await send(speaking, type="input_text", text=SENTENCE)
    await send(speaking, type="flush")
    assert (await recv_until(speaking, "audio_end"))[-1]["interrupted"] is False
    await pinging.aclose()
    await speaking.aclose()
    stalled.close()


@pytest.mark.parametrize("how", ["reset", "fin"])
@pytest.mark.parametrize("when", ["mid_utterance", "idle"])
async def test_a_connection_gone_without_a_close_frame_ends_the_session_and_frees_the_slot(
        clients_gateway, nursery, when, how):
    """`reset`: SO_LINGER 0, the kernel sends RST. `fin`: the client shuts down its
    sending side (EOF, no close frame) and stays connected without reading."""
    gw = clients_gateway
    _, key = gw.key("pro", "reset")  # one connection
    _, other_key = gw.key("enterprise", "beside-reset")
    other = await open_ws(nursery, gw.tts(), other_key)
    await send(other, type="init")
    assert (await recv(other))["type"] == "ready"
    context_id = f"{how}-{when}"
    client = await RawClient.connect(gw.url, f"{TTS_PATH}?context_id={context_id}", key)
    client.send_json(type="init")
    assert (await client.event())["type"] == "ready"
    text = ""
    if when == "mid_utterance":
        text = LONG_TEXT
        client.send_json(type="input_text", text=text)
        client.send_json(type="flush")
        await audio_arrives(client)
    if how == "reset":
        client.reset()
    else:
        client.sock.shutdown(socket.SHUT_WR)
    with trio.fail_after(30):
        refusals = await accepted_again(nursery, gw.tts(), key)
    assert set(refusals) <= {"too_many_connections"}
    row = await row_of(gw, context_id)
    assert row["reason"] == "client_closed" and row["characters"] == len(text)
    await send(other, type="ping")
    assert (await recv(other))["type"] == "pong"
    await other.aclose()
    client.close()


async def test_a_silent_client_is_ended_by_the_heartbeat_and_its_slot_freed(
        clients_gateway, nursery):
    gw = clients_gateway
    _, key = gw.key("free", "silent")  # one connection, a ping every second
    client = await RawClient.connect(gw.url, TTS_PATH + "?context_id=silent", key)
    client.send_json(type="init")
    assert (await client.event())["type"] == "ready"
    # From here it reads nothing and sends nothing: no pong, no close.
    row = await row_of(gw, "silent")
    assert row["reason"] == "idle_timeout"
    event, code = await first_event(nursery, gw.tts(), key)
    assert event["type"] == "ready", (event, code)
    # What it was sent meanwhile: pings, then a close frame saying why.
    frames = [await client.frame()]
    with trio.fail_after(30):
        while frames[-1][0] != 0x8:
            frames.append(await client.frame())
    opcodes = [opcode for opcode, _ in frames]
    assert 0x9 in opcodes and opcodes[-1] == 0x8, frames
    events = [orjson.loads(payload) for opcode, payload in frames if opcode == 0x1]
    assert (events[-1]["type"], events[-1]["reason"]) == ("session_ended", "idle_timeout")
    assert frames[-1][1] == (1000).to_bytes(2, "big") + b"no pong"
    client.close()


# -- the gateway killed with -9, or stopped with SIGTERM, with sessions open -------------

async def open_sessions_of_every_kind(nursery, gw: GatewayProcess, key: str) -> dict:
    """Sessions in each state a fault can find them in, by context id: ready and idle,
    mid-utterance, after a whole utterance, and STT with audio streamed."""
    sessions = {}
    for context_id in ("idle", "speaking", "spoke"):
        ws = await open_ws(nursery, gw.tts(f"?context_id={context_id}"), key)
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
        sessions[context_id] = ws
    await send(sessions["spoke"], type="input_text", text=SENTENCE)
    await send(sessions["spoke"], type="flush")
    await recv_until(sessions["spoke"], "audio_end")
    await send(sessions["speaking"], type="input_text", text=LONG_TEXT)
    await send(sessions["speaking"], type="flush")
    await recv_until(sessions["speaking"], "audio_chunk")
    stt = await open_ws(nursery, gw.stt("?context_id=listening"), key)
    await send(stt, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(stt))["type"] == "ready"
    for pos in range(0, len(SPEECH_16K), 640):
        await stt.send_message(SPEECH_16K[pos:pos + 640])
    await send(stt, type="ping")  # answered after every frame before it was taken
    assert (await recv(stt))["type"] == "pong"
    sessions["listening"] = stt
    return sessions


CONTEXTS = {"idle", "speaking", "spoke", "listening"}


async def last_event_and_code(context_id: str, ws, ended: dict) -> None:
    """Read `ws` until the gateway closes it; note its last event and the close code."""
    events = []
    with trio.fail_after(30):
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    events.append(orjson.loads(message))
        except trio_websocket.ConnectionClosed as exc:
            ended[context_id] = (events[-1] if events else {}, exc.reason.code)


async def test_gateway_killed_with_open_sessions_closes_every_row_on_restart(tmp_path):
    gw = GatewayProcess(tmp_path, "").start()
    try:
        key_id, key = gw.key("enterprise", "doomed")
        async with trio.open_nursery() as nursery:
            sessions = await open_sessions_of_every_kind(nursery, gw, key)
            gw.signal(signal.SIGKILL)
            gw.wait()
            for ws in sessions.values():  # the connections are gone, without a close
                with trio.fail_after(30):
                    assert await closed_code(ws) == 1006
            nursery.cancel_scope.cancel()
        rows = gw.rows()
        assert {r["context_id"] for r in rows} == CONTEXTS and len(rows) == len(CONTEXTS)
        assert all(r["ended_at"] is None for r in rows)
        gw.stop()
        gw.start()
        rows = gw.rows()
        # One row per session, none lost, each closed with a reason at its last known
        # moment (its last save, or its start), not at the restart.
        assert {r["context_id"] for r in rows} == CONTEXTS and len(rows) == len(CONTEXTS)
        for row in rows:
            assert row["reason"] == "crashed", row
            assert row["ended_at"] == (row["saved_at"] or row["started_at"]), row
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []


async def test_sigterm_under_load_ends_every_session_and_flushes_the_rows(tmp_path):
    gw = GatewayProcess(tmp_path, "").start()
    try:
        key_id, key = gw.key("enterprise", "shutdown")
        ended: dict[str, tuple[dict, int]] = {}

        async with trio.open_nursery() as nursery:
            sessions = await open_sessions_of_every_kind(nursery, gw, key)
            stalled = await stalled_client(gw, key, "stalled")
            gw.signal(signal.SIGTERM)
            async with trio.open_nursery() as readers:
                for context_id, ws in sessions.items():
                    readers.start_soon(last_event_and_code, context_id, ws, ended)
            nursery.cancel_scope.cancel()
        assert gw.wait() == 0
        stalled.close()
        # Every session: `session_ended` (server_shutdown) as the last event, then 1001.
        assert ended.keys() == CONTEXTS
        for context_id, (last, code) in ended.items():
            assert last.get("type") == "session_ended", (context_id, last)
            assert last["reason"] == "server_shutdown" and code == 1001, (context_id, last)
        rows = {r["context_id"]: r for r in gw.rows()}
        assert rows.keys() == CONTEXTS | {"stalled"} and len(gw.rows()) == len(rows)
        for row in rows.values():
            assert row["reason"] == "server_shutdown" and row["ended_at"] is not None, row
        # The counts are flushed with them; a client that reads nothing does not hold up
        # the shutdown past its grace, and its row is closed the same way.
        assert rows["stalled"]["characters"] == len(LONG_TEXT)
        assert rows["spoke"]["characters"] == len(SENTENCE) and rows["spoke"]["audio_ms"] > 0
        assert rows["speaking"]["characters"] == len(LONG_TEXT)
        assert rows["speaking"]["audio_ms"] > 0
        assert rows["listening"]["audio_ms"] == pytest.approx(1000)
        assert rows["idle"]["characters"] == 0 and rows["idle"]["audio_ms"] == 0
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []


async def test_sigterm_with_workers_ends_every_session_and_exits_once_they_are_over(
        tmp_path, redis_server):
    """With workers, each worker ends its sessions and exits as soon as they are over,
    not after the longest grace it might have needed (here a minute: the hang guard
    below is half that)."""
    config = WORKERS_CONFIG.replace("[gateway]\n", "[gateway]\nshutdown_grace_s = 60.0\n")
    gw = GatewayProcess(tmp_path, config, workers=2, redis_url=redis_server.url).start()
    try:
        key_id, key = gw.key("enterprise", "shutdown")
        ended: dict[str, tuple[dict, int]] = {}
        async with trio.open_nursery() as nursery:
            sessions = {}
            for n in range(6):  # the kernel spreads them over both workers
                ws = await open_ws(nursery, gw.tts(f"?context_id=w{n}"), key)
                await send(ws, type="init")
                assert (await recv(ws))["type"] == "ready"
                sessions[f"w{n}"] = ws
            await send(sessions["w0"], type="input_text", text=LONG_TEXT)
            await send(sessions["w0"], type="flush")
            await recv_until(sessions["w0"], "audio_chunk")
            gw.signal(signal.SIGTERM)
            async with trio.open_nursery() as readers:
                for context_id, ws in sessions.items():
                    readers.start_soon(last_event_and_code, context_id, ws, ended)
            nursery.cancel_scope.cancel()
        assert await trio.to_thread.run_sync(gw.wait, 30) == 0
        assert ended.keys() == sessions.keys()
        for context_id, (last, code) in ended.items():
            assert last.get("type") == "session_ended", (context_id, last)
            assert last["reason"] == "server_shutdown" and code == 1001, (context_id, last)
        rows = await ended_rows(gw, key_id)
        assert sorted(r["context_id"] for r in rows) == sorted(sessions)
        assert all(r["reason"] == "server_shutdown" for r in rows)
        assert next(r for r in rows if r["context_id"] == "w0")["characters"] == len(LONG_TEXT)
        async with open_redis(redis_server.url) as redis:  # no lease outlives its session
            limits = RedisLimits(redis)
            with trio.fail_after(30):
                while await limits.connections(key_id):
                    await trio.sleep(0.1)
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []


async def test_the_parent_killed_with_workers_serving_ends_their_sessions_cleanly(
        tmp_path, redis_server):
    """kill -9 of the parent: the orphaned workers notice, end their sessions as on
    SIGTERM, close the rows and release the leases, and exit."""
    gw = GatewayProcess(tmp_path, WORKERS_CONFIG, workers=2, redis_url=redis_server.url).start()
    try:
        key_id, key = gw.key("enterprise", "orphaned")
        workers = worker_pids(gw.proc.pid)
        assert len(workers) == 2
        ended: dict[str, tuple[dict, int]] = {}
        async with trio.open_nursery() as nursery:
            sessions = {}
            for n in range(4):
                ws = await open_ws(nursery, gw.tts(f"?context_id=o{n}"), key)
                await send(ws, type="init")
                assert (await recv(ws))["type"] == "ready"
                sessions[f"o{n}"] = ws
            gw.signal(signal.SIGKILL)
            gw.wait()
            async with trio.open_nursery() as readers:
                for context_id, ws in sessions.items():
                    readers.start_soon(last_event_and_code, context_id, ws, ended)
            nursery.cancel_scope.cancel()
        for context_id, (last, code) in ended.items():
            assert last.get("type") == "session_ended", (context_id, last)
            assert last["reason"] == "server_shutdown" and code == 1001, (context_id, last)
        assert ended.keys() == sessions.keys()
        rows = await ended_rows(gw, key_id)
        assert sorted(r["context_id"] for r in rows) == sorted(sessions)
        assert all(r["reason"] == "server_shutdown" for r in rows)
        async with open_redis(redis_server.url) as redis:
            limits = RedisLimits(redis)
            with trio.fail_after(30):
                while await limits.connections(key_id):
                    await trio.sleep(0.1)
        with trio.fail_after(30):
            while any(Path(f"/proc/{pid}").exists() and not zombie(pid) for pid in workers):
                await trio.sleep(0.1)
    finally:
        gw.stop()
    assert gw.unexpected_log_lines() == []
