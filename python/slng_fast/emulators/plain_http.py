"""Plain HTTP next to the WebSocket upgrade on one emulator port, as the providers serve
their REST API on the host of their WebSockets (a voice listing, say). Each connection's
request head is read with h11: a WebSocket upgrade is handed to trio-websocket with the
bytes already read replayed, so the emulator's handler sees what ``serve_websocket``
would give it; any other request is answered by the emulator's ``rest`` function (a JSON
answer, then the connection is closed).

``rest(method, target, headers)`` gets the method, the request target (path and query)
and the headers (names lower-cased) and returns ``(status, JSON body)``, or ``None`` for a
route it does not know (404)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import h11
import orjson
import trio
import trio_websocket

log = logging.getLogger("slng_fast.emulators")

Rest = Callable[[str, str, dict[str, str]], Awaitable[tuple[int, Any] | None]]
HEAD_TIMEOUT = 60.0  # trio-websocket's own connect timeout
CLOSE_TIMEOUT = 60.0
RECEIVE_BYTES = 4096
MAX_MESSAGE_SIZE = 2 ** 20  # trio-websocket's default


class Replay(trio.abc.Stream):
    """A stream whose first bytes are those already read from it."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self.stream = stream
        self.head = head

    @property
    def socket(self) -> Any:
        """The TCP socket beneath (fault injection resets it)."""
        inner = getattr(self.stream, "transport_stream", self.stream)
        return getattr(inner, "socket", None)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.head:
            cut = len(self.head) if max_bytes is None else max_bytes
            data, self.head = self.head[:cut], self.head[cut:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def read_head(stream: trio.abc.Stream,
                    parser: h11.Connection) -> tuple[bytes, h11.Request | None]:
    """The bytes read and the request, or None when the client sent no request."""
    seen = bytearray()
    while True:
        event = parser.next_event()
        if isinstance(event, h11.Request):
            return bytes(seen), event
        if event is not h11.NEED_DATA:
            return bytes(seen), None
        data = await stream.receive_some(RECEIVE_BYTES)
        seen += data
        parser.receive_data(bytes(data))  # b"": the end of the stream


async def answer(stream: trio.abc.Stream, parser: h11.Connection, status: int,
                 body: Any, method: str) -> None:
    payload = orjson.dumps(body)
    out = parser.send(h11.Response(status_code=status, headers=[
        ("content-type", "application/json"), ("content-length", str(len(payload))),
        ("connection", "close")])) or b""
    if method != "HEAD":
        out += parser.send(h11.Data(data=payload)) or b""
    out += parser.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


async def serve_http_and_websocket(
        handler: Callable[[Any], Awaitable[None]], rest: Rest, host: str, port: int, *,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve WebSocket ``handler`` (a trio-websocket request handler) and ``rest`` on
    ``host:port`` (0 picks one) until cancelled; ``task_status`` gets the bound port."""

    async def on_connection(stream: trio.abc.Stream) -> None:
        try:
            await connection(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError,
                trio_websocket.ConnectionClosed):
            pass
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                scope.shield = True
                await stream.aclose()

    async def connection(stream: trio.abc.Stream) -> None:
        parser = h11.Connection(h11.SERVER)
        head, request = b"", None
        with trio.move_on_after(HEAD_TIMEOUT):
            head, request = await read_head(stream, parser)
        if request is None:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in request.headers}
        if headers.get("upgrade", "").lower() == "websocket":
            async with trio.open_nursery() as nursery:
                ws_request = await trio_websocket.wrap_server_stream(
                    nursery, Replay(stream, head), max_message_size=max_message_size)
                try:
                    await handler(ws_request)
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await ws_request._connection.aclose()
            return
        method, target = request.method.decode(), request.target.decode("latin-1")
        if method not in ("GET", "HEAD"):
            await answer(stream, parser, 405, {"detail": "Method Not Allowed"}, method)
            return
        try:
            result = await rest(method, target, headers)
        except Exception:
            log.debug("emulator REST route failed", exc_info=True)
            result = (500, {"detail": "Internal Server Error"})
        status, body = result if result is not None else (404, {"detail": "Not Found"})
        await answer(stream, parser, status, body, method)

    listeners: list[Any] = await trio.open_tcp_listeners(port, host=host) \
        if ssl_context is None else \
        await trio.open_ssl_over_tcp_listeners(port, ssl_context, host=host)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(trio.serve_listeners, on_connection, listeners))
        first = bound[0]
        sock = getattr(first, "socket", None) or first.transport_listener.socket
        task_status.started(sock.getsockname()[1])
