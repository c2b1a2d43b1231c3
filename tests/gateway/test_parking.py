"""Parked connections (gateway/parking.py): an accepted, authenticated connection that
has not sent its first message waits with no task; everything a session does while it
waits (answer its first message, its heartbeat, its idle timeout, a shutdown, a drain,
a revoked key, the client leaving) happens as it did with a task."""

from __future__ import annotations

import socket
import time

import orjson
import trio

from faults.processes import RawClient, masked
from wsclient import closed_code, connect, recv, recv_until, send

TTS_PATH = "/v1/tts/espeak-websocket-stream"


async def parked(gw, count: int) -> None:
    """Wait until ``count`` connections are parked (their handlers' store calls ran in
    threads first). Bounded in real time, and never blocked in trio: a thread or a
    socket at work is no runnable task, so an autojump clock would jump meanwhile (10
    virtual seconds passed in 1,000 short sleeps while a loaded machine's thread ran)."""
    deadline = time.monotonic() + 10
    while len(gw.gateway.parked) != count:
        assert time.monotonic() < deadline, (len(gw.gateway.parked), count)
        time.sleep(0.001)  # noqa: ASYNC251 (the thread and the sockets go on meanwhile)
        await trio.lowlevel.checkpoint()


def handler_tasks() -> list[str]:
    """The connection handlers' tasks trio's serve loop runs (one per unparked
    connection), and every task of the gateway's own."""
    tasks, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        tasks.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return sorted(name for name in tasks
                  if name.startswith(("slng_fast.gateway.", "trio._highlevel_serve")))


async def test_an_idle_connection_has_no_task_and_its_first_message_is_answered(gw, nursery):
    before = handler_tasks()
    clients = [await connect(gw.tts(), gw.keys["pro"], nursery=nursery) for _ in range(3)]
    await parked(gw, 3)
    await trio.sleep(0.1)
    assert handler_tasks() == before  # no handler, no reader, no session task
    for number, ws in enumerate(clients):
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
        assert len(gw.gateway.parked) == 2 - number
    await send(clients[0], type="init")
    assert (await recv(clients[0]))["type"] == "ready"
    await send(clients[0], type="input_text", text="Hello there.")
    await send(clients[0], type="flush")
    events = await recv_until(clients[0], "audio_end")
    assert any(e["type"] == "audio_chunk" for e in events)
    for ws in clients:
        await ws.aclose()


async def raw_connect(url: str, path: str, key: str, then: bytes = b"") -> RawClient:
    """A bare-socket client, upgraded (``then``: bytes sent with the request head). Its
    socket is connected by trio, not in a thread, so that an autojump clock does not
    move on meanwhile (the server's handshake timeout would answer 408)."""
    host, port = url.removeprefix("ws://").split(":")
    connected = trio.socket.socket()
    await connected.connect((host, int(port)))
    client = RawClient(socket.socket(fileno=connected.detach()))
    client.sock.setblocking(False)
    client.send_now(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode() + then)
    head = await client._read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return client


async def test_a_message_sent_with_the_handshake_is_answered_in_order(gw, nursery):
    """Bytes that came with the request head are read at once: no parking then."""
    client = await raw_connect(gw.url, TTS_PATH, gw.keys["pro"],
                               masked(0x1, orjson.dumps({"type": "ping"}))
                               + masked(0x1, orjson.dumps({"type": "init"})))
    assert (await client.event())["type"] == "pong"
    assert (await client.event())["type"] == "ready"
    assert not gw.gateway.parked
    client.sock.close()


async def test_a_parked_connection_answers_pings_and_stays_parked(gw, nursery,
                                                                  autojump_clock):
    """The heartbeat goes on while parked (a ping every 30 s for `pro`): pongs keep it
    parked; once they stop, the session ends as any session does ("no pong")."""
    client = await raw_connect(gw.url, TTS_PATH, gw.keys["pro"])
    await parked(gw, 1)
    start = trio.current_time()
    for number in range(4):
        opcode, payload = await client.frame()
        assert opcode == 0x9, (opcode, payload)
        assert 30 * number + 29 <= trio.current_time() - start <= 30 * number + 31
        client.send_now(masked(0xA, payload))
        await trio.sleep(1)
        assert len(gw.gateway.parked) == 1  # the pong was taken where it waits
    # A client that stops answering: one more ping, then the end, 30 s later.
    frames = [await client.frame()]
    assert frames[0][0] == 0x9 and 149 <= trio.current_time() - start <= 152
    while frames[-1][0] != 0x8:
        frames.append(await client.frame())
    events = [orjson.loads(p) for op, p in frames if op == 0x1]
    assert (events[-1]["type"], events[-1]["reason"]) == ("session_ended", "idle_timeout")
    assert frames[-1][1] == (1000).to_bytes(2, "big") + b"no pong"
    assert 179 <= trio.current_time() - start <= 182
    client.sock.close()


async def test_a_parked_connection_times_out_as_an_idle_session(gw, nursery, autojump_clock):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await parked(gw, 1)
    start = trio.current_time()
    events = await recv_until(ws, "session_ended")
    assert events[-1]["reason"] == "idle_timeout"
    assert 299 <= trio.current_time() - start <= 302
    assert await closed_code(ws) == 1000
    assert not gw.gateway.parked


async def test_drain_and_shutdown_end_parked_connections(gw, nursery):
    first = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await parked(gw, 1)
    gw.gateway.draining.set()
    events = await recv_until(first, "session_ended")
    assert events[-1]["reason"] == "server_shutdown"
    assert await closed_code(first) == 1001
    gw.gateway.draining = trio.Event()
    second = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await parked(gw, 1)
    gw.gateway.shutdown.set()
    events = await recv_until(second, "session_ended")
    assert events[-1]["reason"] == "server_shutdown"
    assert await closed_code(second) == 1001
    with trio.fail_after(10):
        await gw.gateway.idle.wait()


async def test_a_revoked_key_ends_its_parked_connections(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["enterprise"], nursery=nursery)
    await parked(gw, 1)
    gw.gateway.end_revoked({gw.key_ids["enterprise"]})
    event = await recv(ws)
    assert (event["type"], event["code"]) == ("error", "auth_failed")
    assert await closed_code(ws) == 4000


async def test_a_client_that_leaves_while_parked_frees_its_slot(gw, nursery):
    """`free` allows one connection: it is free again as soon as the parked one goes."""
    for _ in range(3):
        ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
        await parked(gw, 1)
        await ws.aclose()
        with trio.fail_after(10):
            while gw.gateway.active:
                await trio.sleep(0.01)
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    await ws.aclose()


async def test_parked_connections_are_closed_with_their_server(nursery):
    """The server cancelled with connections parked (no gateway to end them): their
    sockets are closed, not left open."""
    from slng_fast.gateway.native_transport import serve_native_websocket

    resumed = []

    async def handler(request):
        conn = await request.accept(None, parkable=True)

        async def resume(awoken):
            resumed.append(awoken)

        assert conn.park(resume, trio.current_time() + 60, 30)

    async with trio.open_nursery() as server:
        port = await server.start(serve_native_websocket, handler, "127.0.0.1", 0)
        client = await raw_connect(f"ws://127.0.0.1:{port}", "/", "k")
        await trio.sleep(0.1)
        server.cancel_scope.cancel()
    with trio.fail_after(5):
        while await client._fill():
            pass  # EOF: the socket was closed
    assert resumed == []
    client.sock.close()
