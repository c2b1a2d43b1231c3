"""Connections not answered yet are bounded per worker, in total and per client address:
past a bound a new connection gets 503 with Retry-After at once; answered connections
(sessions, refusals, plain HTTP) do not count; slow request heads get 408."""

from __future__ import annotations

import orjson
import trio

from harness import make_gateway, start_gateway
from slng_fast.config import Config
from slng_fast.gateway.admission import PendingConnections
from wsclient import connect, recv, send


def test_counts_in_total_and_per_address():
    refused: list[int] = []
    pending = PendingConnections(max_total=3, max_per_address=2,
                                 on_refused=lambda: refused.append(1))
    assert pending.admit("a") and pending.admit("a")
    assert not pending.admit("a")  # per address
    assert pending.admit("b")
    assert not pending.admit("c")  # in total
    pending.leave("a")
    assert pending.admit("c")
    assert pending.count == 3 and pending.by_address == {"a": 1, "b": 1, "c": 1}
    assert pending.refused == 2 and len(refused) == 2
    for address in ("a", "b", "c"):
        pending.leave(address)
    assert pending.count == 0 and pending.by_address == {}


async def idle_tcp(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def answer_of(stream: trio.SocketStream, seconds: float = 5.0) -> bytes:
    data = b""
    with trio.move_on_after(seconds):
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_idle_connections_past_the_bound_get_503_and_answered_ones_do_not_count(
        nursery, tmp_path, engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, max_pending_connections=100, max_pending_per_address=4)
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    port = int(gw.url.rsplit(":", 1)[1])
    # a live session and a plain HTTP request are answered: they hold no pending place
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    idle = [await idle_tcp(port) for _ in range(4)]
    with trio.fail_after(5):
        while gw.gateway.pending.count < 4:
            await trio.sleep(0.01)
    refused = await idle_tcp(port)
    answer = await answer_of(refused)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "too_many_pending_connections"
    assert gw.gateway.metrics.value("slng_refusals_total", limit="pending_connections") == 1
    # the session goes on meanwhile
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    # one idle connection sends its request: answered, so a new one is admitted
    await idle[0].send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    health = await answer_of(idle[0], 2.0)
    assert b" 200 " in health.split(b"\r\n")[0]
    assert orjson.loads(health.split(b"\r\n\r\n", 1)[1])["pending_connections"] == 4
    assert gw.gateway.pending.count == 3  # answered now
    admitted = await idle_tcp(port)
    await admitted.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 200 " in (await answer_of(admitted, 2.0)).split(b"\r\n")[0]
    for stream in idle[1:]:
        await stream.aclose()
    with trio.fail_after(5):
        while gw.gateway.pending.count:
            await trio.sleep(0.01)
    await ws.aclose()


async def test_a_request_head_slower_than_the_handshake_timeout_gets_408(
        nursery, tmp_path, engines, autojump_clock):
    urls, info = engines
    config = Config(data_dir=tmp_path, handshake_timeout_s=3.0)
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    stream = await idle_tcp(int(gw.url.rsplit(":", 1)[1]))
    await stream.send_all(b"GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\n")
    answer = await answer_of(stream, 10.0)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert gw.gateway.pending.count == 0
