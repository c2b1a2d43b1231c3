"""A provider that never answers the gateway's close frame: the link the session closed
drops the socket after CLOSE_TIMEOUT, while the session goes on (its reader does not wait
for that answer as long as the session lives)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

from harness import EMULATOR_KEY, make_gateway, start_gateway
from slng_fast import _native
from slng_fast.config import Config, ProviderConfig
from slng_fast.gateway.bridge import CLOSE_TIMEOUT
from wsclient import connect, recv, send


@dataclass
class Upstream:
    close_at: float | None = None  # our close frame read
    eof_at: float | None = None  # the gateway's end of the socket


async def start_mute_provider(nursery: trio.Nursery) -> tuple[str, list[Upstream]]:
    """Accepts WebSockets and reads them, answering nothing: no close frame back."""
    seen: list[Upstream] = []

    async def serve(stream: trio.SocketStream) -> None:
        upstream = Upstream()
        seen.append(upstream)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        match = re.search(rb"sec-websocket-key:\s*(\S+)", head, re.IGNORECASE)
        assert match is not None
        accept = _native.ws_accept_key(match.group(1).decode())
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                              + accept.encode() + b"\r\n\r\n")
        frames = _native.WsConnection(1 << 20)
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                upstream.eof_at = trio.current_time()
                return
            if any(isinstance(event, _native.Close) for event in frames.receive_data(data)):
                upstream.close_at = trio.current_time()

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}", seen


async def test_a_closed_link_drops_a_provider_that_never_answers_the_close(nursery, tmp_path):
    url, upstreams = await start_mute_provider(nursery)
    config = Config(data_dir=tmp_path, engines=(), providers={
        "orpheus": ProviderConfig(url=url, api_key=EMULATOR_KEY)})
    gw = await start_gateway(nursery, make_gateway(tmp_path, {}, {}, config=config))
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", voice_id="tara")
    assert (await recv(ws))["type"] == "ready"
    with trio.fail_after(5):
        while not upstreams:
            await trio.sleep(0.01)
    await send(ws, type="configure", voice_id="luna")  # the SLNG dialect reconnects
    first = upstreams[0]
    with trio.fail_after(CLOSE_TIMEOUT + 5):
        while first.eof_at is None:
            await trio.sleep(0.02)
    assert first.close_at is not None  # our close came first, unanswered
    await send(ws, type="ping")  # the session itself went on
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()
