"""The WebSocket transport behind one small interface, so a faster implementation can
replace trio-websocket without touching sessions. A transport accepts connections and
hands each to the gateway as an `IncomingRequest`; once accepted it is a `Connection`."""

from __future__ import annotations

import codecs
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio
import trio_websocket
from wsproto.frame_protocol import Frame, MessageDecoder, Opcode, ParseFailed

from slng_fast import _native
from slng_fast.gateway.http import HttpExchange

# The reason of a ConnectionClosed when we dropped a peer that took nothing we wrote
# (a pong, a ping, a close) within the send timeout: a slow client, not a closed one.
PEER_NOT_READING = "peer not reading"


class ConnectionClosed(Exception):
    """The peer is gone; `code` is the close code it sent (or 1006). ``broken``: we
    failed the connection because the peer broke the WebSocket protocol (a message over
    the size limit, a malformed frame); `code` is then the one we sent, the peer sent none."""

    def __init__(self, code: int | None, reason: str | None = None, *,
                 broken: bool = False) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.broken = broken


class MessageTooLarge(Exception):
    """The peer sent a message over this connection's size limit: the frame layer read
    no more of it. The connection is still open for our answer (an ``error`` and close
    4002); nothing more will be received from it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamRejected(OSError):
    """The upstream answered the WebSocket handshake with a refusal (401, 404, ...): the
    provider's answer, not a network fault, so it is not retried."""

    def __init__(self, status: int | None, detail: str = "") -> None:
        super().__init__(f"upstream refused the WebSocket handshake: HTTP {status} {detail}".strip())
        self.status = status


class Connection:
    """One accepted or opened WebSocket, as the bridge uses it: every method it calls is
    here. Transports subclass it; the bodies of the last three are the defaults of a
    transport without a data plane."""

    __slots__ = ("on_closing",)  # (a subclass may be slotted)

    # Called once, synchronously, as soon as the peer is closing or gone (before our
    # answer to its close frame is written); a transport that cannot tell leaves it be.
    on_closing: Callable[[], None] | None

    async def receive(self) -> str | bytes:
        """The next message; raises ConnectionClosed, or MessageTooLarge once."""
        raise NotImplementedError
    async def send(self, frame: str | bytes) -> None:
        raise NotImplementedError
    async def send_within(self, frame: str | bytes, timeout: float, *, text: bool = False) -> bool:
        """Send one message (``text``: UTF-8 bytes as a text message); False if it was not
        written within ``timeout`` s, after which the connection must be aborted."""
        raise NotImplementedError
    async def ping(self) -> None:
        """Send a ping and return when its pong arrives."""
        raise NotImplementedError
    async def close(self, code: int = 1000, reason: str = "") -> None:
        raise NotImplementedError
    async def abort(self) -> None:
        """Drop the connection now, without a close handshake (a peer that reads nothing)."""
        raise NotImplementedError

    async def pump(self, sink: Callable[[str | bytes], Awaitable[None]]) -> None:
        """Hand every message to ``sink`` until the connection ends, then raise
        ConnectionClosed. A transport with its own reader does it from that task."""
        while True:
            await sink(await self.receive())

    async def deliver(self, sink: MessageSink) -> bool:
        """Hand the messages received so far to ``sink`` (in this task), then return True
        and hand every later one, and the end, from the connection's own reader: the
        caller keeps no task waiting on `receive`. False where the transport has no
        reader of its own (the caller runs `receive` in a task of its own)."""
        return False

    # -- the data plane (docs/decisions.md, "The data plane boundary") --
    def start_relay(self, relay: Relay) -> bool:
        """Carry this upstream's steady-state audio to ``relay.client`` without the
        session: each read is fed to ``relay.state`` (which frames what it owns for the
        client), ``relay.report`` is told what went through before the frames are
        written, and the first message the state does not own, with everything after
        it, is handed on as usual (to `pump`'s sink), the relay then stopped. False
        when this transport (or this pair of connections) has no data plane: the
        session's own path carries the stream."""
        return False

    def stop_relay(self) -> None:
        """Stop the relay at once (before the next read); nothing if none is running."""

    def start_uplink(self, uplink: Uplink) -> bool:
        """The STT mirror of `start_relay`, on the client's connection: each read is fed
        to ``uplink.state``, which frames the client audio it owns for
        ``uplink.upstream``; ``uplink.report`` is told what went through before it is
        written, and the first message the state does not own, with everything after
        it, is received as usual, the uplink then stopped. False when this transport
        (or this pair of connections) has no data plane."""
        return False

    def stop_uplink(self) -> None:
        """Stop the uplink at once (before the next read); nothing if none is running."""

    def hold_reads(self) -> bool:
        """Read nothing more from the peer until `release_reads` (or the connection's
        close): what was read is still received. The bridge holds a client's reads while
        the session works through the messages read before it asked for an uplink, so
        that the uplink can start once they are done even when the client sends faster
        than the session handles messages. False where the transport cannot (nothing is
        held)."""
        return False

    def release_reads(self) -> None:
        """Read again (nothing if reads are not held)."""

    # -- idle connections with no task (docs/decisions.md, "Parked connections") --
    def park(self, resume: Callable[[Awoken], Awaitable[None]], wake_at: float,
             heartbeat_s: float) -> bool:
        """Wait for the peer's first message with no task at all: True, and the caller's
        handler returns at once; ``resume(awoken)`` then runs later, in a task of the
        transport's, as the rest of that handler (the connection is closed after it as
        after a handler). It runs when the peer sends anything but a pong (or closes),
        at ``wake_at``, on `wake()`, and when a heartbeat ping the transport sends every
        ``heartbeat_s`` is not answered within as long. False where the transport
        cannot park this connection (it has read something, or has no such wait): the
        caller goes on."""
        return False

    def wake(self) -> None:
        """Resume a parked connection now (a shutdown, a revoked key); else nothing."""


@dataclass(frozen=True, slots=True)
class Awoken:
    """What a parked connection's wait leaves to the session that resumes it."""

    parked_at: float  # when it was parked: the session's clocks run from there
    ping_at: float  # when the next heartbeat ping is due
    pong_missed: bool  # a ping sent while parked was not answered in time


@dataclass(frozen=True, slots=True)
class MessageSink:
    """Where `Connection.deliver` hands a connection's messages and its end."""

    message: Callable[[str | bytes], Awaitable[None]]
    # A message over the limit (`MessageTooLarge`'s reason): nothing is handed on after.
    too_large: Callable[[str], Awaitable[None]]
    # The end (called once, from the reader's own teardown: it must not wait).
    closed: Callable[[ConnectionClosed], None]


@dataclass(frozen=True, slots=True)
class Relay:
    """The one interface between the planes: a stream the session lent to the data plane
    (its `StartRelay`), as the bridge hands it to the upstream connection."""

    state: _native.AudioRelay  # the session's output state, lent for the relay's life
    client: Connection
    timeout: float  # seconds the client may take to accept frames (slow_client)
    # What one read carried (`TtsSession.relayed`), before its frames are written.
    report: Callable[[_native.RelayReport], None]
    # Seconds from a read to its frames written (the added-latency metric).
    written: Callable[[float], None]
    # The client is gone (its ConnectionClosed) or too slow (None): the relay has
    # stopped, and the bridge ends the session.
    lost: Callable[[ConnectionClosed | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Uplink:
    """The STT direction of the same interface: the client's audio the session lent to
    the data plane (its `StartUplink`), as the bridge hands it to the client connection."""

    state: _native.AudioUplink  # the session's input state, lent for the uplink's life
    upstream: Connection
    timeout: float  # seconds the provider may take to accept our frames (stalled)
    # What one read carried (`SttSession.uplinked`), before its frames are written.
    report: Callable[[_native.RelayReport], None]
    # The upstream is gone (its ConnectionClosed) or took nothing (None): the uplink has
    # stopped, and the bridge reports it as its writer would.
    lost: Callable[[ConnectionClosed | None], Awaitable[None]]


@dataclass
class IncomingRequest:
    path: str  # with query string
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    # accept(subprotocol, *, max_message_bytes=None, send_timeout=..., parkable=False):
    # the limits of the key's tier (a transport may apply only some); parkable, the
    # handler may `Connection.park` it (a transport may ignore it).
    accept: Callable[..., Awaitable[Connection]]
    # (status, body[, content_type][, extra_headers=[(name, value)]]); the native transport
    # takes them all, trio-websocket's only (status, body).
    reject: Callable[..., Awaitable[None]]
    # False for a plain HTTP request (GET /healthz, /metrics): only `reject` answers it.
    is_websocket: bool = True
    method: str = "GET"
    # A plain HTTP request on the native transport: its body and a streamed answer
    # (gateway/http.py). None on trio-websocket, which answers only with `reject`.
    http: HttpExchange | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Handler = Callable[[IncomingRequest], Awaitable[None]]

log = logging.getLogger("slng_fast.transport")

# Frames above every tier's limit are refused by the transport itself (close 1009).
TRANSPORT_MAX_MESSAGE = 4 * 1024 * 1024


class _LenientTextDecoder(MessageDecoder):
    """wsproto's message decoder, except that a text frame with invalid UTF-8 is handed on
    (its bad bytes as lone surrogates) instead of ending the connection with 1007: the
    session then answers with an ``error`` and close 1008, as PROTOCOL.md section 7 says
    (the native classifier reports lone surrogates as invalid UTF-8)."""

    def process_frame(self, frame: Frame) -> Frame:
        if frame.opcode is Opcode.CONTINUATION and self.opcode is None:
            raise ParseFailed("unexpected CONTINUATION")
        if frame.opcode is not Opcode.CONTINUATION and self.opcode is not None:
            raise ParseFailed(f"expected CONTINUATION, got {frame.opcode!r}")
        if self.opcode is None:
            self.opcode = frame.opcode
            if frame.opcode is Opcode.TEXT:
                self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        finished = frame.frame_finished and frame.message_finished
        payload = frame.payload
        assert not isinstance(payload, tuple)  # a close frame's (code, reason) is not data
        data: bytes | str = payload
        if self.decoder is not None:
            data = self.decoder.decode(bytes(payload) if isinstance(payload, (bytes, bytearray))
                                       else payload.encode("utf-8", "surrogateescape"), finished)
        out = Frame(self.opcode, data, frame.frame_finished, finished)
        if finished:
            self.opcode = None
            self.decoder = None
        return out


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    return ConnectionClosed(reason.code if reason else None, reason.reason if reason else None)


class TrioWebsocketConnection(Connection):
    def __init__(self, ws: trio_websocket.WebSocketConnection, *, lenient_text: bool = False) -> None:
        self.ws = ws
        self.on_closing: Callable[[], None] | None = None  # not called: no such hook here
        if lenient_text:
            try:  # a private attribute of wsproto: without it, invalid UTF-8 is a 1007
                proto = ws._wsproto.connection._proto  # type: ignore[union-attr]
                lenient = _LenientTextDecoder()
                # A message may already be half-read (its first fragments arrived with the
                # handshake): carry its state over.
                lenient.opcode = proto._message_decoder.opcode
                lenient.decoder = proto._message_decoder.decoder
                proto._message_decoder = lenient
            except AttributeError:
                pass

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, frame: str | bytes) -> None:
        try:
            await self.ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send_within(self, frame: str | bytes, timeout: float, *, text: bool = False) -> bool:
        if text and isinstance(frame, bytes):
            frame = frame.decode()
        with trio.move_on_after(timeout) as scope:
            await self.send(frame)
        return not scope.cancelled_caught

    async def ping(self) -> None:
        try:
            await self.ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.aclose(code, reason)

    async def abort(self) -> None:
        await trio.aclose_forcefully(self.ws._stream)  # trio-websocket has no public abort


async def serve_trio_websocket(handler: Handler, host: str, port: int, *,
                               ssl_context: ssl.SSLContext | None = None,
                               task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve forever; reports the bound port through `task_status`."""

    async def on_request(request: trio_websocket.WebSocketRequest) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]

        async def accept(subprotocol: str | None, **_limits: object) -> Connection:
            # trio-websocket's message size limit is the server's (1009 above it).
            ws = await request.accept(subprotocol=subprotocol)
            return TrioWebsocketConnection(ws, lenient_text=True)

        async def reject(status: int, body: bytes) -> None:
            await request.reject(status, extra_headers=[(b"content-type", b"application/json")],
                                 body=body)

        try:
            await handler(IncomingRequest(request.path, headers,
                                          list(request.proposed_subprotocols), accept, reject))
        except BaseException as exc:  # one connection's fault must not stop the server
            if not only_failures(exc):
                raise  # cancellation goes on
            log.error("connection handler failed", exc_info=exc)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
            on_request, host, port, ssl_context, max_message_size=TRANSPORT_MAX_MESSAGE,
            task_status=task_status))
        task_status.started(server.port)


async def open_upstream(url: str, headers: list[tuple[str, str]], subprotocols: list[str],
                        nursery: trio.Nursery, *, connect_timeout: float = 10.0) -> Connection:
    """Open a WebSocket to an upstream with trio-websocket; a refused handshake raises
    `UpstreamRejected`, a network fault OSError. Its reading runs in a task of
    ``nursery``'s that ends with the connection: a fault there closes the connection
    and is logged, never raised into ``nursery`` (the session's own, which must not fail
    with one of its upstreams)."""
    conn: Connection = await nursery.start(partial(
        _trio_websocket_upstream, url, headers, subprotocols, connect_timeout))
    return conn


async def _trio_websocket_upstream(url: str, headers: list[tuple[str, str]],
                                   subprotocols: list[str], connect_timeout: float, *,
                                   task_status: trio.TaskStatus[Connection]) -> None:
    ssl_context = ssl.create_default_context() if url.startswith("wss://") else None
    started = False
    try:
        async with trio.open_nursery() as reading:
            with trio.fail_after(connect_timeout):
                ws = await trio_websocket.connect_websocket_url(
                    reading, url, ssl_context,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                    subprotocols=subprotocols or None,
                    message_queue_size=64, max_message_size=TRANSPORT_MAX_MESSAGE)
            task_status.started(TrioWebsocketConnection(ws))
            started = True
    except BaseException as exc:
        if not only_failures(exc):
            raise  # cancellation goes on
        if started:
            log.warning("an upstream connection failed", exc_info=exc)
            return
        # (trio-websocket raises a refused handshake from its own task: one of a group.)
        first = exc
        while isinstance(first, BaseExceptionGroup) and len(first.exceptions) == 1:
            first = first.exceptions[0]
        if isinstance(first, trio_websocket.HandshakeError):
            raise UpstreamRejected(getattr(first, "status_code", None),
                                   str(first)[:200]) from first
        if isinstance(first, trio.TooSlowError):
            raise OSError("upstream did not answer in time") from first
        raise first from None


def only_failures(exc: BaseException) -> bool:
    """Whether ``exc`` holds only errors and native panics (PanicException is a
    BaseException), nothing that must go on up such as trio's Cancelled."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_failures(e) for e in exc.exceptions)
    return isinstance(exc, (Exception, _native.PanicException))
