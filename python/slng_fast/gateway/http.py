"""Plain HTTP/1.1 on the gateway's port, by h11: request bodies (JSON, multipart),
keep-alive, and chunked responses that stream as they are produced.

The native transport reads each connection's request head itself (it decides whether
the request is a WebSocket upgrade); a plain request is handed here with every byte
read so far, and h11 parses it again and owns the connection from then on. The limits
are the WebSocket side's: a request head of at most `MAX_HEAD_BYTES` that must arrive
within the handshake timeout (the next one on a kept-alive connection too), a body
no larger than the route allows, read within its time limit, and no write of ours may
wait on a client that reads nothing longer than the send timeout."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11
import orjson
import trio

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # as the WebSocket handshake (rust/src/ws/handshake.rs)
RECEIVE_SIZE = 65536
SERVER = b"slng-fast"


class HttpError(Exception):
    """A request the HTTP layer refuses itself: ``status`` and a short reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed the connection, or took nothing we wrote within the send
    timeout (the connection was then dropped)."""


@dataclass(frozen=True)
class HttpRequestHead:
    method: str
    target: str  # with the query string
    headers: list[tuple[str, str]]  # names lower-cased (h11's)
    http_version: str


class HttpExchange:
    """One request and its response on a kept-alive connection: read the body (within
    a size and a time limit), then answer it whole (`respond`) or as a stream (`start`,
    `write`, `end`: chunked, each piece sent as soon as it is written)."""

    def __init__(self, conn: HttpConnection, head: HttpRequestHead) -> None:
        self._conn = conn
        self.head = head
        self.started = False  # the response's head has been sent
        self.finished = False
        self.body_read = False

    def admitted(self) -> None:
        """The request's key is checked: it no longer counts as a pending connection
        (an upload and its transcription may take a while before the answer starts)."""
        self._conn.answered()

    def head_value(self, name: str) -> str | None:
        """The first header called ``name`` (lower case), or None."""
        for key, value in self.head.headers:
            if key == name:
                return value
        return None

    async def read_body(self, max_bytes: int, timeout: float) -> bytes:
        """The whole request body; HttpError 413 over ``max_bytes`` (the rest is not
        read, the connection closes after the answer), 408 past ``timeout`` seconds."""
        h = self._conn.h11
        length = _content_length(self.head.headers)
        if length is not None and length > max_bytes:
            raise HttpError(413, f"the request body is {length} bytes; at most {max_bytes} "
                            "are accepted here")
        if h.client_is_waiting_for_100_continue:
            await self._conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(timeout) as scope:
            while True:
                try:
                    event = await self._conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise HttpError(400, f"malformed request body: {exc}") from None
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > max_bytes:
                        raise HttpError(413, f"the request body is over {max_bytes} bytes")
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ClientGone("the client closed the connection during the body")
        if scope.cancelled_caught:
            raise HttpError(408, f"the request body did not arrive within {timeout:g} s")
        self.body_read = True
        return b"".join(parts)

    async def respond(self, status: int, body: bytes, content_type: str | None = None, *,
                      headers: list[tuple[str, str]] | None = None) -> None:
        """The whole answer at once (Content-Length)."""
        fields = [("content-type", content_type or _content_type(body))] if body else []
        fields += [("content-length", str(len(body)))] + list(headers or [])
        await self._start(status, fields)
        if body and self.head.method != "HEAD":
            await self._conn.send(h11.Data(data=body))
        await self.end()

    async def reject(self, status: int, body: bytes, content_type: str | None = None, *,
                     extra_headers: list[tuple[str, str]] | None = None) -> None:
        """`IncomingRequest.reject`'s signature, for the routes written for it."""
        await self.respond(status, body, content_type, headers=extra_headers)

    async def start(self, status: int, content_type: str, *,
                    headers: list[tuple[str, str]] | None = None) -> None:
        """Start a streamed answer (chunked transfer coding)."""
        await self._start(status, [("content-type", content_type), *(headers or [])])

    async def write(self, data: bytes) -> None:
        if data and self.head.method != "HEAD":
            await self._conn.send(h11.Data(data=data))

    async def end(self) -> None:
        await self._conn.send(h11.EndOfMessage())
        self.finished = True

    async def _start(self, status: int, fields: list[tuple[str, str]]) -> None:
        if self.started:
            raise RuntimeError("this request was already answered")
        self.started = True
        self._conn.answered()
        h = self._conn.h11
        try:
            while h.their_state is h11.SEND_BODY:  # an empty body's end is already here
                if not isinstance(h.next_event(), h11.Data):
                    break
        except h11.RemoteProtocolError:
            pass  # a malformed body nobody reads: the connection closes after this answer
        if h.their_state is h11.SEND_BODY:
            # An unread body: answer, then close rather than read what nobody wants.
            fields = [*fields, ("connection", "close")]
        await self._conn.send(h11.Response(status_code=status, reason=_reason(status), headers=[
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]))


HttpHandler = Callable[[HttpExchange], Awaitable[None]]


class HttpConnection:
    """One TCP (or TLS) connection speaking HTTP/1.1: its h11 state and the stream."""

    def __init__(self, stream: trio.abc.Stream, *, send_timeout: float,
                 answered_hook: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.send_timeout = send_timeout
        self._answered_hook = answered_hook

    def answered(self) -> None:
        if self._answered_hook is not None:
            self._answered_hook()
            self._answered_hook = None

    async def next_event(self) -> object:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.h11.receive_data(bytes(data))

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if not data:
            return
        with trio.move_on_after(self.send_timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ClientGone(str(exc)) from None
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream)
            raise ClientGone("the client read nothing within the send timeout")

    async def serve(self, handler: HttpHandler, initial: bytes, *,
                    head_timeout: float) -> None:
        """Answer requests until either side closes or the head of the next one does
        not arrive in time."""
        self.h11.receive_data(initial)
        first = True
        while True:
            with trio.move_on_after(head_timeout) as scope:
                try:
                    event = await self.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc.error_status_hint, str(exc))
                    return
            if scope.cancelled_caught:
                if first:  # the native side already had a head: not expected
                    await self._refuse(408, "the request head did not arrive in time")
                return  # an idle kept-alive connection just ends
            first = False
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed, or a client that closed mid-head
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
            head = HttpRequestHead(event.method.decode("ascii", "replace"),
                                   event.target.decode("latin-1"), headers,
                                   event.http_version.decode("ascii", "replace"))
            if any(k == "upgrade" for k, _ in headers):
                # A WebSocket upgrade after a plain request on the same connection.
                await self._refuse(400, "open a WebSocket on a new connection")
                return
            exchange = HttpExchange(self, head)
            try:
                await handler(exchange)
            except HttpError as exc:
                if exchange.started:
                    raise
                await exchange.respond(exc.status, error_body(exc.status, exc.message),
                                       headers=[("connection", "close")]
                                       if exc.status in (408, 413) else None)
            except ClientGone:
                return
            except Exception:
                if not exchange.started:  # a fault of ours: say so before the log does
                    with trio.move_on_after(1.0):
                        try:
                            await exchange.respond(500, error_body(500, "internal error"),
                                                   headers=[("connection", "close")])
                        except (ClientGone, h11.LocalProtocolError):
                            pass
                raise
            if not exchange.started:
                await exchange.respond(500, error_body(500, "the request was not answered"))
            elif not exchange.finished:
                return  # a stream the handler abandoned: the connection cannot go on
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request that never became an exchange, then the connection ends."""
        self.answered()
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = error_body(status, message)
        try:
            await self.send(h11.Response(status_code=status, reason=_reason(status), headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]))
            await self.send(h11.Data(data=body))
            await self.send(h11.EndOfMessage())
        except (ClientGone, h11.LocalProtocolError):
            pass


def error_body(status: int, message: str) -> bytes:
    """The body of a refusal by the HTTP layer itself, in OpenAI's error shape (the
    gateway's own routes add their codes)."""
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": f"http_{status}"}})


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _content_type(body: bytes) -> str:
    return ("application/json" if body.lstrip()[:1] in (b"{", b"[")
            else "text/plain; charset=utf-8")


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
