"""`transport.open_upstream`, the trio-websocket client: its reading runs in a task of
the nursery it is given (the session's), which ends with the connection and never fails
that nursery; a refused handshake and an unreachable provider are raised to the caller
as `UpstreamRejected` and OSError."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from slng_fast.gateway.transport import ConnectionClosed, UpstreamRejected, open_upstream


async def refusing_server(nursery: trio.Nursery) -> int:
    async def answer(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, answer, 0)
    return listeners[0].socket.getsockname()[1]


async def test_a_refused_handshake_is_raised_to_the_caller_only(nursery):
    port = await refusing_server(nursery)
    async with trio.open_nursery() as session:
        with pytest.raises(UpstreamRejected) as refused:
            await open_upstream(f"ws://127.0.0.1:{port}/", [], [], session)
        assert refused.value.status == 401
    # (the session's nursery ended without an error of the connection's)


async def test_an_unreachable_provider_is_an_oserror(nursery):
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as session:
        with pytest.raises(OSError):
            await open_upstream(f"ws://127.0.0.1:{port}/", [], [], session,
                                connect_timeout=2.0)


async def test_its_task_ends_with_the_connection(nursery):
    async def provider(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("hello")
        await ws.aclose(1000, "bye")

    server = await nursery.start(trio_websocket.serve_websocket, provider, "127.0.0.1", 0,
                                 None)
    with trio.fail_after(10):
        async with trio.open_nursery() as session:
            conn = await open_upstream(f"ws://127.0.0.1:{server.port}/", [], [], session)
            assert len(session.child_tasks) == 1  # its reading
            assert await conn.receive() == "hello"
            with pytest.raises(ConnectionClosed):
                await conn.receive()
        # the nursery ended: the reading task ended with the connection, cleanly
