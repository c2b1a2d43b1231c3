"""The WebSocket transport on the native frame codec (rust/src/ws/) over trio
streams: the same contract as `transport.serve_trio_websocket`, at about a third of
its CPU per message.

Each TCP (or TLS) connection is read until its HTTP request head is complete; the
handler then gets a `NativeIncomingRequest`. A WebSocket upgrade is answered with
``accept(subprotocol)``, which returns a `NativeWebSocketConnection`. A plain HTTP
request (``is_websocket`` False) goes to h11 (gateway/http.py), which owns that
connection from then on: each request reaches the handler with ``http`` set (its
body, a streamed answer) and may be answered with ``reject(status, body)``. A
malformed handshake is answered here (400, 405, 426 or 431) and never reaches the
handler.

One reader task per accepted connection feeds every ``receive_some`` to the native
`WsConnection` (one call returns every complete event), answers pings, matches
pongs to our pings, and runs the close handshake: the peer's close frame is
answered once, then the server closes the TCP stream; a protocol error (1002, 1009
oversize, ...) is answered with a close frame of that code. Text that is not UTF-8
reaches ``receive()`` as a str with lone surrogates (errors="surrogateescape"), so
the session can answer ``invalid_utf8`` and close 1008."""

from __future__ import annotations

import base64
import logging
import math
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, assert_never
from urllib.parse import urlsplit

import trio

from slng_fast import _native
from slng_fast._native import BinaryMessage, TextMessage
from slng_fast.gateway.admission import BUSY_RESPONSE, PendingConnections
from slng_fast.gateway.data_plane import DataPlane, Lent, current_plane
from slng_fast.gateway.http import HttpConnection, HttpExchange
from slng_fast.gateway.parking import ParkedConnections
from slng_fast.gateway.queues import ByteBoundedQueue
from slng_fast.gateway.transport import (
    PEER_NOT_READING,
    TRANSPORT_MAX_MESSAGE,
    Awoken,
    Connection,
    ConnectionClosed,
    Handler,
    IncomingRequest,
    MessageSink,
    MessageTooLarge,
    Relay,
    Uplink,
    UpstreamRejected,
    only_failures,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 20.0  # seconds for the request head to arrive
CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's close frame after ours
LINGER_TIMEOUT = 2.0  # seconds to drain a failed connection before closing it
# Seconds a write of ours (a pong, a ping, a close) may wait for a peer that reads
# nothing before the connection is dropped: nothing we write may block for ever.
SEND_TIMEOUT = 10.0
RECEIVE_SIZE = 65536
MESSAGE_QUEUE = 64  # messages read ahead of receive(); then the socket is not read
MESSAGE_QUEUE_BYTES = 256 * 1024  # ... or once this many bytes of them are waiting
FAIR_READS = 16  # reads that found data at once before the reader yields anyway
# WebSocket requests a server's handler answers at once; the others wait, their head
# read, for a turn. A burst of thousands answered together left each idle connection
# ~5 KiB more (the heap fragmented by their transient objects): docs/decisions.md.
ANSWERING_AT_ONCE = 64

_OK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed)


@dataclass
class NativeIncomingRequest(IncomingRequest):
    """An `IncomingRequest` whose ``reject`` takes an optional third argument, the
    Content-Type (by default application/json for a body starting with ``{`` or ``[``,
    else text/plain)."""


def _content_type(body: bytes) -> str:
    return "application/json" if body.lstrip()[:1] in (b"{", b"[") else "text/plain; charset=utf-8"


class _Once:
    """A `trio.Event` made only if someone waits: a parked connection holds two."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: trio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()


class NativeWebSocketConnection(Connection):
    """An accepted WebSocket: the `transport.Connection` interface."""

    # Slotted: a parked connection is most of what an idle client costs (an instance
    # dict of this many attributes is a 1.6 KiB table).
    __slots__ = ("_backlog", "_broken", "_close_code", "_close_reason", "_close_written",
                 "_decoded", "_delivering", "_done", "_drained", "_eager_reads",
                 "_handed_to_parking", "_held", "_initial", "_lent", "_parking",
                 "_ping_count", "_pings", "_plane", "_queue", "_reader_nursery",
                 "_reader_scope", "_relay", "_report_too_large", "_send_lock", "_sink",
                 "_sock", "_stream", "_too_large", "_uplink", "_ws", "send_timeout")

    def __init__(self, stream: trio.abc.Stream, ws: _native.WsConnection,
                 queue_size: int = MESSAGE_QUEUE, *, queue_bytes: int = MESSAGE_QUEUE_BYTES,
                 report_too_large: bool = False, send_timeout: float = SEND_TIMEOUT) -> None:
        self._stream = stream
        self._ws = ws
        self._send_lock: trio.Lock | None = None  # made by the first write
        # (Not `ByteBoundedQueue[...](...)`: a subscripted call gives the instance an
        # ``__orig_class__``, a dict per connection.)
        self._queue: ByteBoundedQueue[str | bytes] = ByteBoundedQueue(queue_size, queue_bytes)
        # A message over the size limit: reported to receive() as MessageTooLarge (the
        # session answers it) instead of closing with 1009 here.
        self._report_too_large = report_too_large
        self._too_large: str | None = None
        self._close_written = _Once()
        self.send_timeout = send_timeout
        # Called once, synchronously, as soon as the peer is known to be closing or gone
        # (its close frame, EOF, a broken socket), before anything is written back: the
        # gateway frees the key's connection slot there, so a client that reconnects the
        # moment its close handshake completes finds the slot free.
        self.on_closing: Callable[[], None] | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._broken = False  # we failed the connection: the peer broke the protocol
        self._pings: dict[bytes, trio.Event] = {}
        self._ping_count = 0
        self._done = _Once()  # the reader has ended and the stream is closed
        self._reader_scope: trio.CancelScope | None = None  # made as the reader starts
        # A plain TCP stream is read and written with os.read/os.write on its descriptor,
        # waiting only when the kernel says so: trio's own socket calls pass through the
        # scheduler even when they need not wait, once per frame each way.
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._eager_reads = 0
        self._drained = False  # the last read emptied the socket's buffer
        self._sink: MessageSink | None = None  # `deliver`: messages and the end
        self._relay: Relay | None = None
        self._uplink: Uplink | None = None  # the STT direction, on a client's connection
        # The reader is handing the events of one read on: a relay started now would
        # write the next read's audio before the rest of them reached the session.
        self._delivering = False
        # The stream on the worker's data plane: read by the plane (this connection
        # its source), or written by it (this connection its sink).
        self._plane: DataPlane | None = None
        self._lent: Lent | None = None
        # Set while the session holds this connection's reads (`hold_reads`): the reader
        # waits on it before its next read.
        self._held: trio.Event | None = None
        # The end of a frame the data plane could not write (this connection its sink):
        # written before anything else.
        self._backlog = b""
        # An accepted connection's reader starts on first use (`_start_reading`): until
        # then the connection can be parked with no task (`park`).
        self._reader_nursery: trio.Nursery | None = None
        self._initial = b""  # bytes read with the request head, for the reader
        self._decoded: list[_native._WsEvent] | None = None  # read while parked
        self._parking: ParkedConnections | None = None
        self._handed_to_parking = False  # by its handler, which then returned

    # ---- the Connection interface ----

    async def receive(self) -> str | bytes:
        self._start_reading()
        try:
            return await self._queue.get()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._too_large is not None and self._close_code is None:
                raise MessageTooLarge(self._too_large) from None
            raise ConnectionClosed(self._close_code, self._close_reason) from None

    async def send(self, frame: str | bytes) -> None:
        await self.send_within(frame, math.inf)

    async def send_within(self, frame: str | bytes, timeout: float, *, text: bool = False) -> bool:
        """Send one message (``text`` sends UTF-8 bytes as a text message); False if it
        could not all be written within ``timeout`` seconds, after which the connection
        is unusable (a frame was cut) and should be aborted."""
        if self._close_code is not None:
            raise ConnectionClosed(self._close_code, self._close_reason)
        try:
            if isinstance(frame, str):
                data = self._ws.send_text(frame)
            elif text:
                data = self._ws.send_text_utf8(frame)
            else:
                data = self._ws.send_binary(frame if type(frame) is bytes else bytes(frame))
        except _native.WsClosedError:
            raise ConnectionClosed(self._close_code, self._close_reason) from None
        return await self._write(data, timeout)

    # ---- the data plane (`transport.Relay`) ----

    def start_relay(self, relay: Relay) -> bool:
        """Relay to a client of this transport (the frames go to its socket in one write
        per read); False for any other client, and while messages already read are not
        all handed to `pump`'s sink (they come first: the session asks again after)."""
        if (not isinstance(relay.client, NativeWebSocketConnection) or self._delivering
                or self._sink is None):
            return False
        self._relay = relay
        return True

    def stop_relay(self) -> None:
        self._relay = None
        self._leave_plane()

    def _leave_plane(self) -> None:
        """Take a stream this connection is the source or sink of off the data plane,
        synchronously: before anything else writes to the sink or closes either socket."""
        lent = self._lent
        if lent is not None:
            assert self._plane is not None
            self._plane.take_back(lent)
            source, sink = lent.ends
            source._lent = sink._lent = None
            outcome = lent.outcome
            if outcome is not None and outcome[1]:
                # Handed back with the end of a frame unwritten: the sink owns those bytes
                # now, and its next write, whoever makes it, sends them first.
                sink._backlog += outcome[1]
                lent.outcome = (outcome[0], b"", *outcome[2:])

    def _plane_for(self, sink: Connection) -> DataPlane | None:
        """The data plane, if a stream from this connection to ``sink`` can be lent to it
        now: both ends plain sockets (TLS stays on the reader), neither end lent already,
        the sink open and no write of its in progress."""
        if (self._sock is None or self._lent is not None
                or not isinstance(sink, NativeWebSocketConnection) or sink._sock is None
                or sink._close_code is not None or sink._ws.close_sent
                or (sink._send_lock is not None and sink._send_lock.locked())
                or sink._lent is not None):
            return None
        return current_plane()

    async def _lend(self, plane: DataPlane, sink: NativeWebSocketConnection,
                    stream: Relay | Uplink, written: Callable[[float], None] | None = None
                    ) -> Lent:
        """Lend the stream from this connection to ``sink`` until it comes back."""
        assert self._sock is not None and sink._sock is not None  # _plane_for checked
        lent = plane.lend(self._sock.fileno(), self._ws, sink._sock.fileno(), sink._ws, stream,
                          written)
        self._plane = sink._plane = plane
        self._lent = sink._lent = lent
        lent.ends = (self, sink)
        try:
            await lent.back.wait()
        finally:
            self._leave_plane()
        return lent

    async def _carry_on(self, plane: DataPlane, stream: Relay | Uplink, sink: Connection,
                        written: Callable[[float], None] | None = None
                        ) -> list[_native._WsEvent] | None:
        """Lend the stream (this connection its source, ``sink`` its sink) to the plane
        until it comes back: then what the reader would have done with the read the plane
        could not finish (the events left for the ordinary path, None at the end of the
        stream). ``written`` times a relay's frames."""
        assert isinstance(sink, NativeWebSocketConnection)  # _plane_for checked it
        lent = await self._lend(plane, sink, stream, written)
        # No stream may start before the events left of this read are handed on.
        self._delivering = True
        if lent.outcome is None:
            return []  # taken back: nothing read is waiting
        assert lent.report is not None
        handed_back, unwritten, sink_error, ended, error = lent.outcome
        sink._backlog += unwritten  # (already moved there by _leave_plane: b"")
        if error is not None:
            raise error
        if handed_back:
            self._stop_carrying(stream)
        if lent.report.messages:
            stream.report(lent.report)
        if sink_error is not None:
            self._stop_carrying(stream)
            sink._set_closed(1006, "connection lost")
            await stream.lost(ConnectionClosed(sink._close_code, sink._close_reason))
        elif sink._backlog:  # the end of a cut frame (_leave_plane gave it to the sink)
            start = trio.current_time()
            if await self._write_carried(stream, sink, b"") and written is not None:
                written(trio.current_time() - start)
        elif lent.seconds is not None and written is not None:
            written(lent.seconds)
        if ended is not None:
            if ended:
                raise trio.BrokenResourceError(ended)
            return None
        if self._relay is stream or self._uplink is stream:
            return []
        # What it did not own stays queued in the framing, in order.
        return self._ws.receive_data(b"")

    async def _relay_read(self, relay: Relay, data: bytes) -> list[_native._WsEvent]:
        """One read through the relay: the events it leaves for the ordinary path."""
        client = relay.client
        assert isinstance(client, NativeWebSocketConnection)  # start_relay checked it
        if client._close_code is not None or client._ws.close_sent:
            self._relay = None  # the client is going: the session sees the rest
            return self._ws.receive_data(data)
        start = trio.current_time()
        wire, report, handed_back = relay.state.feed(self._ws, data, client._ws)
        if handed_back:
            self._relay = None
        if report.messages:
            relay.report(report)
        if wire and not await self._relay_write(relay, wire, start):
            return []
        # What it did not own stays queued in the framing, in order.
        return self._ws.receive_data(b"") if handed_back else []

    async def _relay_write(self, relay: Relay, wire: bytes, start: float) -> bool:
        """Write relayed frames to the client within its slow-client timeout; False (the
        relay stopped, the bridge told) if it is gone or too slow."""
        client = relay.client
        assert isinstance(client, NativeWebSocketConnection)
        if not await self._write_carried(relay, client, wire):
            return False
        relay.written(trio.current_time() - start)
        return True

    async def _write_carried(self, stream: Relay | Uplink, sink: NativeWebSocketConnection,
                             wire: bytes) -> bool:
        """Write a stream's carried frames to its sink within the stream's timeout; False
        (the stream stopped, the bridge told) if the sink is gone or took nothing."""
        try:
            delivered = await sink._write(wire, stream.timeout)
        except ConnectionClosed as exc:
            self._stop_carrying(stream)
            await stream.lost(exc)
            return False
        if not delivered:
            self._stop_carrying(stream)
            await stream.lost(None)
            return False
        return True

    def _stop_carrying(self, stream: Relay | Uplink) -> None:
        if self._relay is stream:
            self._relay = None
        if self._uplink is stream:
            self._uplink = None

    # ---- the data plane, STT direction (`transport.Uplink`) ----

    def start_uplink(self, uplink: Uplink) -> bool:
        """Carry this client's audio to an upstream of this transport (the frames go to
        its socket in one write per read); False for any other upstream, and while
        messages already read are not all received or handed to `deliver`'s sink (they
        come first; the bridge counts those its loop has not taken)."""
        if (not isinstance(uplink.upstream, NativeWebSocketConnection) or self._delivering
                or self._queue.waiting):
            return False
        self._uplink = uplink
        return True

    def stop_uplink(self) -> None:
        self._uplink = None
        if self._lent is not None and self._lent.ends[0] is self:
            self._leave_plane()

    def hold_reads(self) -> bool:
        if self._held is None:
            self._held = trio.Event()
        return True

    def release_reads(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.set()

    async def _uplink_read(self, uplink: Uplink, data: bytes) -> list[_native._WsEvent]:
        """One read through the uplink: the events it leaves for the ordinary path."""
        upstream = uplink.upstream
        assert isinstance(upstream, NativeWebSocketConnection)  # start_uplink checked it
        # From here until its events are handed on, no uplink may start: it would carry
        # the next read before the messages left of this one reached the session.
        self._delivering = True
        if upstream._close_code is not None or upstream._ws.close_sent:
            self._uplink = None  # the upstream is going: the session sees the rest
            return self._ws.receive_data(data)
        wire, report, handed_back = uplink.state.feed(self._ws, data, upstream._ws)
        if handed_back:
            self._uplink = None
        if report.messages:
            uplink.report(report)
        if wire:
            await self._write_carried(uplink, upstream, wire)
        # What it did not own stays queued in the framing, in order, for the session.
        return self._ws.receive_data(b"") if self._uplink is None else []

    async def pump(self, sink: Callable[[str | bytes], Awaitable[None]]) -> None:
        """`deliver` with this task waiting for the end: every message goes to ``sink``
        from the reader task itself, then this raises ConnectionClosed."""
        await self.deliver(MessageSink(sink, _ignore_too_large, _ignore_end))
        await self._done.wait()
        raise ConnectionClosed(self._close_code, self._close_reason, broken=self._broken)

    async def deliver(self, sink: MessageSink) -> bool:
        """Messages already queued go to ``sink`` first, in order; then the reader task
        hands each message to it as it reads it (no queue, no task of the caller's
        waiting), and the end (`_reader`'s teardown, `_refuse_too_large`)."""
        self._start_reading()
        while True:
            try:
                message = self._queue.get_nowait()
            except trio.WouldBlock:
                # No checkpoint since the queue was seen empty: nothing is read between.
                self._sink = sink
                return True
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._too_large is not None and self._close_code is None:
                    await sink.too_large(self._too_large)
                else:
                    sink.closed(ConnectionClosed(self._close_code, self._close_reason,
                                                 broken=self._broken))
                return True
            await sink.message(message)

    async def ping(self) -> None:
        self._start_reading()  # (its pong is read there)
        if self._close_code is not None:
            raise ConnectionClosed(self._close_code, self._close_reason)
        self._ping_count += 1
        payload = struct.pack(">Q", self._ping_count)
        answered = trio.Event()
        self._pings[payload] = answered
        try:
            written = await self._write(self._ws.send_ping(payload), self.send_timeout)
        except _native.WsClosedError:
            raise ConnectionClosed(self._close_code, self._close_reason) from None
        if not written:
            await self.abort(PEER_NOT_READING)
            raise ConnectionClosed(self._close_code, self._close_reason)
        await answered.wait()
        if self._pings.pop(payload, None) is not None:  # woken by the end, not a pong
            raise ConnectionClosed(self._close_code, self._close_reason)

    async def abort(self, reason: str = "aborted") -> None:
        """Drop the connection now, without a close handshake."""
        self._set_closed(1006, reason)
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        await trio.aclose_forcefully(self._stream)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame (once), wait for the peer's (CLOSE_TIMEOUT at most),
        then close the stream."""
        self._start_reading()  # (the peer's close frame is read there)
        if not self._ws.close_sent and not self._done.is_set():
            frame = self._ws.send_close(code, reason)
            if self._close_code is None:
                self._close_code, self._close_reason = code, reason
            try:
                written = await self._write(frame, self.send_timeout)
            except ConnectionClosed:
                written = True
            if not written:  # a peer that reads nothing gets no close handshake
                await self.abort(PEER_NOT_READING)
            self._close_written.set()
            self._drain()
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._done.wait()
        if not self._done.is_set():
            self._leave_plane()
            if self._reader_scope is not None:
                self._reader_scope.cancel()
            await trio.aclose_forcefully(self._stream)

    # ---- parked: no task while waiting for the first message (gateway/parking.py) ----

    def park(self, resume: Callable[[Awoken], Awaitable[None]], wake_at: float,
             heartbeat_s: float) -> bool:
        parking = self._parking
        if (parking is None or not parking.available or self._reader_nursery is None
                or self._initial or self._sock is None or self._close_code is not None):
            return False
        self._reader_nursery = None  # the handler's nursery ends: `_resumed` gives another
        self._handed_to_parking = True
        # trio's serve loop closes the stream its handler was given when the handler
        # returns: the descriptor leaves that stream for one of the connection's own.
        sock = trio.socket.from_stdlib_socket(socket.socket(fileno=self._sock.detach()))
        self._sock, self._stream = sock, trio.SocketStream(sock)
        parking.park(self, resume, wake_at, heartbeat_s)
        return True

    def wake(self) -> None:
        if self._parking is not None:
            self._parking.wake(self)

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def read_parked(self) -> bool | None:
        """(`ParkedPeer`) Pongs are taken here; anything else is for the reader."""
        try:
            data = os.read(self.fileno(), RECEIVE_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            return None  # the reader meets the fault again, or the end
        if not data:
            return None
        events = self._ws.receive_data(data)
        if all(type(event) is _native.Pong for event in events):
            return bool(events)  # (a pong may come in pieces: the codec keeps the rest)
        self._decoded = events
        return None

    def ping_parked(self) -> bool:
        """(`ParkedPeer`) A heartbeat ping written now, whole or with its end left to the
        next write (then False: the session resumes and writes it)."""
        self._ping_count += 1
        try:
            rest = self._write_now(self._ws.send_ping(struct.pack(">Q", self._ping_count)))
        except (OSError, trio.ClosedResourceError):
            return False
        if rest is not None:
            self._backlog = bytes(rest)
            return False
        return True

    def drop_parked(self) -> None:
        assert self._sock is not None
        self._sock.close()
        self._done.set()

    def _start_reading(self) -> None:
        nursery, self._reader_nursery = self._reader_nursery, None
        if nursery is not None:
            self._reader_scope = trio.CancelScope()
            nursery.start_soon(self._reader, self._initial)
            self._initial = b""

    # ---- internals ----

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection ended (or is ending), or None while it is open."""
        if self._close_code is None:
            return None
        return ConnectionClosed(self._close_code, self._close_reason)

    def _set_closed(self, code: int | None, reason: str | None) -> None:
        self._leave_plane()
        self.release_reads()
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason

    def _drain(self) -> None:
        """Drop the messages nobody will read, so a reader blocked on a full queue
        goes on to read the peer's close frame."""
        self._queue.clear()
        self.release_reads()

    async def _write(self, data: bytes, timeout: float = math.inf) -> bool:
        """Write ``data`` whole; False if ``timeout`` passed first, counting the wait for
        another writer to finish (a peer that reads nothing blocks every writer). With a
        finite timeout the write is shielded: a cancelled send would cut a frame and
        ruin the stream, so only the timeout (after which the caller aborts) may leave
        it unfinished."""
        lent = self._lent
        if lent is not None and lent.ends[1] is self:
            self._leave_plane()  # the plane writes to this sink: no interleaving
        if not data and not self._backlog:
            return True
        deadline = math.inf
        lock = self._send_lock
        if lock is None:
            lock = self._send_lock = trio.Lock()
        try:
            lock.acquire_nowait()  # no extra checkpoint when uncontended
        except trio.WouldBlock:
            deadline = trio.current_time() + timeout
            with trio.move_on_at(deadline) as waiting:  # nothing written yet: safe to cancel
                await lock.acquire()
            if waiting.cancelled_caught:
                return False
        try:
            if self._backlog:  # a cut frame's end (see _leave_plane) goes first
                data, self._backlog = self._backlog + data, b""
            rest: bytes | memoryview | None = data
            if self._sock is not None:
                rest = self._write_now(data)
                if rest is None:
                    return True
            with trio.CancelScope(shield=math.isfinite(timeout)) as scope:
                if math.isfinite(deadline):
                    scope.deadline = deadline
                else:
                    scope.relative_deadline = timeout
                if self._sock is None:
                    assert rest is not None
                    await self._stream.send_all(rest)
                else:
                    while rest is not None:
                        await trio.lowlevel.wait_writable(self._sock)
                        rest = self._write_now(rest)
            return not scope.cancelled_caught
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._set_closed(1006, "connection lost")
            raise ConnectionClosed(self._close_code, self._close_reason) from None
        finally:
            lock.release()

    def _write_now(self, data: bytes | memoryview) -> memoryview | None:
        """Write what the kernel takes at once; the rest, or None when all is written."""
        fd = self._sock.fileno()  # type: ignore[union-attr]  # -1 once closed
        if fd < 0:  # never write to a descriptor that may be reused
            raise trio.ClosedResourceError
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return None
        return memoryview(data)[sent:]

    async def _receive_some(self) -> bytes:
        sock = self._sock
        if sock is None:
            return bytes(await self._stream.receive_some(RECEIVE_SIZE))
        if self._drained:
            # The last read took less than it asked for: the socket was empty then, and
            # a read now would almost always fail with EAGAIN. Wait first.
            await trio.lowlevel.wait_readable(sock)
        else:
            self._eager_reads += 1
            if self._eager_reads >= FAIR_READS:  # a peer that always has data still yields
                self._eager_reads = 0
                await trio.lowlevel.checkpoint()
        while True:
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                self._eager_reads = 0
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            else:
                self._drained = len(data) < RECEIVE_SIZE
                return data

    async def _deliver(self, message: str | bytes) -> None:
        if self._ws.close_sent:  # we are closing: nobody reads these
            return
        sink = self._sink
        if sink is not None:
            await sink.message(message)
            return
        try:
            self._queue.put_nowait(message)
        except trio.WouldBlock:
            await self._queue.put(message)
        except trio.ClosedResourceError:
            pass

    def _peer_closing(self) -> None:
        hook, self.on_closing = self.on_closing, None
        if hook is not None:
            try:
                hook()
            except Exception:  # a hook's fault must not break the connection's teardown
                log.exception("on_closing hook failed")

    async def _refuse_too_large(self, reason: str) -> None:
        """A message over the size limit: the reader stops here (the rest of that message
        is not read as frames), receive() raises MessageTooLarge once the messages
        before it are taken, and the session answers with its error and close (4002).
        Then the peer's remaining bytes are discarded until it closes. Should nobody
        close within CLOSE_TIMEOUT, 1009 is sent here."""
        self._too_large = reason
        self._queue.close()
        told, self._sink = self._sink, None
        if told is not None:
            await told.too_large(reason)
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._close_written.wait()
        if not self._ws.close_sent:
            self._set_closed(1009, reason)
            await self._write(self._ws.send_close(1009, reason), self.send_timeout)
        await self._linger()

    def _on_pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited
        # A pong answers its ping and every earlier one.
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break

    async def _linger(self) -> None:
        """After failing the connection: half-close and discard what the peer still
        sends (its close frame, the rest of an oversize message) until it closes,
        LINGER_TIMEOUT at most. Closing with unread bytes would send a TCP reset,
        which can destroy our close frame before the peer reads it."""
        with trio.move_on_after(LINGER_TIMEOUT):
            if isinstance(self._stream, trio.abc.HalfCloseableStream):
                await self._stream.send_eof()
            while await self._stream.receive_some(RECEIVE_SIZE):
                pass

    async def _reader(self, initial: bytes) -> None:
        ws = self._ws
        scope = self._reader_scope
        if scope is None:  # (`_start_reading` makes it first, so that abort can cancel)
            scope = self._reader_scope = trio.CancelScope()
        with scope:
            try:
                events = ws.receive_data(initial)
                decoded, self._decoded = self._decoded, None
                if decoded:  # read while the connection was parked: they come first
                    events = decoded + events
                while True:
                    if events:
                        self._delivering = True
                        for event in events:
                            # Messages first, by class identity: a match on class patterns
                            # costs a few hundred ns per event more (bench in decisions.md).
                            if type(event) is BinaryMessage or type(event) is TextMessage:
                                await self._deliver(event.data)
                                continue
                            match event:
                                case _native.BinaryMessage(data) | _native.TextMessage(data):
                                    await self._deliver(data)
                                case _native.Ping(payload):
                                    # A peer that pings but reads nothing is dropped, not
                                    # waited for: the pong may not block the reader for ever.
                                    if not ws.close_sent and not await self._write(
                                            ws.send_pong(payload), self.send_timeout):
                                        await self.abort(PEER_NOT_READING)
                                        return
                                case _native.Pong(payload):
                                    self._on_pong(payload)
                                case _native.InvalidTextMessage(data):
                                    await self._deliver(data.decode("utf-8", "surrogateescape"))
                                case _native.Close(code, reason):
                                    self._peer_closing()
                                    self._set_closed(code, reason)
                                    await self._write(ws.send_close(None if code == 1005 else code,
                                                                    reason), self.send_timeout)
                                    return
                                case _native.ProtocolViolation(1009, reason) if self._report_too_large:
                                    await self._refuse_too_large(reason)
                                    return
                                case _native.ProtocolViolation(close_code, reason):
                                    # Fail the connection with its code.
                                    self._broken = self._close_code is None
                                    self._peer_closing()
                                    self._set_closed(close_code, reason)
                                    await self._write(ws.send_close(close_code, reason),
                                                      self.send_timeout)
                                    self._queue.close()
                                    await self._linger()
                                    return
                                case _:
                                    assert_never(event)
                    self._delivering = False
                    # Not held while waiting: the last read and its messages (a stream
                    # waits here, or lent to the plane, for most of its life).
                    events, data, event = [], b"", None  # type: ignore[assignment]
                    while self._held is not None:  # the session asked for a pause
                        await self._held.wait()
                    relay, uplink = self._relay, self._uplink
                    plane = (self._plane_for(relay.client) if relay is not None
                             else self._plane_for(uplink.upstream) if uplink is not None
                             else None)
                    if plane is not None:
                        if relay is not None:
                            carried = await self._carry_on(plane, relay, relay.client,
                                                           relay.written)
                        else:
                            assert uplink is not None
                            carried = await self._carry_on(plane, uplink, uplink.upstream)
                        if carried is None:
                            self._peer_closing()
                            self._set_closed(1006, "connection lost")
                            return
                        events = carried
                        continue
                    data = await self._receive_some()
                    if not data:
                        self._peer_closing()
                        self._set_closed(1006, "connection lost")
                        return
                    relay, uplink = self._relay, self._uplink
                    events = (await self._uplink_read(uplink, data) if uplink is not None
                              else ws.receive_data(data) if relay is None
                              else await self._relay_read(relay, data))
            except _OK_ERRORS:
                self._set_closed(1006, "connection lost")
            except trio.Cancelled:
                raise
            except BaseException:
                # A fault (a panic in a native call): it fails whatever holds this
                # connection, which is then not told of an ordinary end as well.
                self._sink = None
                raise
            finally:
                self._peer_closing()
                self._set_closed(1006, "connection lost")
                self._queue.close()
                told, self._sink = self._sink, None
                if told is not None:  # (the sink holds its session: no cycle is left)
                    try:
                        told.closed(ConnectionClosed(self._close_code, self._close_reason,
                                                     broken=self._broken))
                    except Exception:  # its fault must not break the teardown
                        log.exception("a connection's end was not handed on")
                for answered in self._pings.values():
                    answered.set()
                # Shielded: a cancellation arriving at this await would replace the
                # exception the reader is ending with (a panic in a native call was
                # lost that way, the session left waiting, when the session let go of
                # the link in that instant). `_done` is set whatever happens, or a
                # close() in progress waits its whole timeout for a reader that is gone.
                try:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(self._stream)
                finally:
                    self._done.set()


async def _read_request(stream: trio.abc.Stream, timeout: float = HANDSHAKE_TIMEOUT
                        ) -> tuple[_native.WsRequest, bytes] | None:
    """The request head and every byte read (the head included); None if the peer went
    away or was answered here."""
    buf = b""
    with trio.move_on_after(timeout):
        while True:
            try:
                request = _native.ws_parse_request(buf)
            except _native.WsHandshakeError as exc:
                status, reason = exc.args
                body = ('{"error":"bad_handshake","message":%s}' % _json_str(reason)).encode()
                await stream.send_all(_native.ws_reject_response(
                    status, body, [("Content-Type", "application/json")]))
                return None
            if request is not None:
                return request, buf
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return None
            buf += data
    await stream.send_all(_native.ws_reject_response(408, b""))
    return None


async def _ignore_too_large(reason: str) -> None:
    """`pump`'s callers read upstreams, which fail an oversize message as broken."""


def _ignore_end(closed: ConnectionClosed) -> None:
    """`pump` raises the end itself."""


def _json_str(text: str) -> str:
    import json

    return json.dumps(text)


async def _serve_connection(stream: trio.abc.Stream, handler: Handler,
                            server_max_message: int, *,
                            answered_hook: Callable[[], None] | None = None,
                            handshake_timeout: float = HANDSHAKE_TIMEOUT,
                            parking: ParkedConnections | None = None,
                            answering: trio.Semaphore | None = None) -> bool:
    """One connection; True when its handler parked it (``parking`` has it now: the
    stream stays open). ``answered_hook`` is called once the handler has answered the
    request (accepted or rejected it): it is no longer a pending connection. A
    WebSocket request's handler runs once it has one of ``answering``'s turns, which it
    holds until it answers (or returns)."""
    head = await _read_request(stream, handshake_timeout)
    if head is None:
        return False
    request, buf = head
    if not request.is_websocket:
        # Plain HTTP: h11 reads the request again from its first byte and owns the
        # connection from here (bodies, keep-alive, chunked answers).
        await HttpConnection(stream, send_timeout=SEND_TIMEOUT, answered_hook=answered_hook
                             ).serve(partial(_http_request, handler), buf,
                                     head_timeout=handshake_timeout)
        return False
    leftover = buf[request.consumed:]
    answered = False
    connection: NativeWebSocketConnection | None = None
    if answering is not None:
        await answering.acquire()
    turn = answering

    def release_turn() -> None:
        nonlocal turn
        if turn is not None:
            turn.release()
            turn = None

    def now_answered() -> None:
        """The turn goes to the next request; this one is no longer pending."""
        nonlocal answered
        answered = True
        release_turn()
        if answered_hook is not None:
            answered_hook()

    async with trio.open_nursery() as nursery:

        async def accept(subprotocol: str | None, *, max_message_bytes: int | None = None,
                         send_timeout: float = SEND_TIMEOUT,
                         parkable: bool = False) -> Connection:
            """``max_message_bytes``: this connection's limit (the key's tier), at most
            the server's; a longer message is reported as MessageTooLarge.
            ``parkable``: the reader starts only when the handler first reads, pings or
            closes, so that until then it may `park` the connection (a handler that
            does neither meanwhile does not see the peer go)."""
            nonlocal connection
            if answered:
                raise RuntimeError("this request was already answered")
            if not request.is_websocket or request.key is None:
                raise RuntimeError("not a WebSocket upgrade request: answer it with reject()")
            now_answered()
            await stream.send_all(_native.ws_accept_response(request.key, subprotocol))
            limit = min(max_message_bytes or server_max_message, server_max_message)
            ws = _native.WsConnection(limit, lenient_text=True)
            connection = NativeWebSocketConnection(stream, ws, report_too_large=True,
                                                   send_timeout=send_timeout)
            connection._reader_nursery, connection._initial = nursery, leftover
            if parkable:
                connection._parking = parking
            else:
                connection._start_reading()
            return connection

        async def reject(status: int, body: bytes, content_type: str | None = None, *,
                         extra_headers: list[tuple[str, str]] | None = None) -> None:
            if answered:
                raise RuntimeError("this request was already answered")
            now_answered()
            headers = [("Content-Type", content_type or _content_type(body))] if body else []
            headers += extra_headers or []
            if request.method == "HEAD":
                body = b""
            await stream.send_all(_native.ws_reject_response(status, body, headers))

        incoming = NativeIncomingRequest(
            request.path, request.headers, request.subprotocols, accept, reject,
            is_websocket=request.is_websocket, method=request.method)
        parked = False
        try:
            parked = await _closing_after(handler(incoming), lambda: connection)
        finally:
            release_turn()
            nursery.cancel_scope.cancel()
            if connection is None and not answered:
                try:
                    await stream.send_all(_native.ws_reject_response(500, b""))
                except _OK_ERRORS:
                    pass
    return parked


async def _closing_after(handled: Awaitable[None],
                         connection_of: Callable[[], NativeWebSocketConnection | None]
                         ) -> bool:
    """Run the handler (or a parked connection's rest of it), then close the WebSocket
    it accepted, if any: 1000, 1009 after a message over the limit it did not answer,
    1011 after a panic. True, and nothing closed, when the handler parked it."""
    code, reason = 1000, ""
    try:
        await handled
    except* _native.PanicException:
        code, reason = 1011, "internal error"
        raise
    finally:
        connection = connection_of()
        # (Read before any checkpoint: the connection may wake and resume after one.)
        parked = connection is not None and connection._handed_to_parking
        if connection is not None and not parked:
            if connection._too_large is not None and code == 1000:
                code = 1009
            try:
                await connection.close(code, reason)
            except _OK_ERRORS:
                pass
    return parked


async def _resumed(connection: NativeWebSocketConnection,
                   resume: Callable[[Awoken], Awaitable[None]], awoken: Awoken) -> None:
    """A parked connection's task (`ParkedConnections`): the rest of its handler, with
    a nursery for its reader, then its close, as `_serve_connection` and `on_stream`."""
    stream = connection._stream
    connection._handed_to_parking = False
    with _FailuresLogged():
        try:
            async with trio.open_nursery() as nursery:
                connection._reader_nursery = nursery
                try:
                    await _closing_after(resume(awoken), lambda: connection)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)


async def _http_request(handler: Handler, exchange: HttpExchange) -> None:
    """One plain HTTP request, handed to the gateway's handler as an `IncomingRequest`
    whose ``http`` is the exchange (its body, a streamed answer)."""

    async def accept(*_args: object, **_kwargs: object) -> Connection:
        raise RuntimeError("not a WebSocket upgrade request: answer it with reject()")

    head = exchange.head
    await handler(NativeIncomingRequest(head.target, head.headers, [], accept, exchange.reject,
                                        is_websocket=False, method=head.method, http=exchange))


async def open_native_upstream(url: str, headers: list[tuple[str, str]],
                               subprotocols: list[str], nursery: trio.Nursery, *,
                               connect_timeout: float = 10.0,
                               max_message_bytes: int = TRANSPORT_MAX_MESSAGE) -> Connection:
    """Open a WebSocket to a provider with the native codec (client side: our frames
    masked). A refused handshake raises `UpstreamRejected`; a network fault OSError."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    default_port = (secure and port == 443) or (not secure and port == 80)
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}" + ("" if default_port else f":{port}"),
             "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
             "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    lines += [f"{name}: {value}" for name, value in headers]
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.abc.Stream
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl.create_default_context())
            else:
                stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(RECEIVE_SIZE)
                if not chunk or len(data) > 65536:
                    raise OSError("upstream closed during the WebSocket handshake")
                data += chunk
    except trio.TooSlowError as exc:
        raise OSError("upstream did not answer in time") from exc
    except trio.BrokenResourceError as exc:
        raise OSError(f"upstream connection failed: {exc}") from exc
    head, _, leftover = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    if status != 101:
        await trio.aclose_forcefully(stream)
        raise UpstreamRejected(status, fields[2] if len(fields) > 2 else "")
    answer = {name.strip().lower(): value.strip() for name, _, value in
              (line.partition(":") for line in header_lines)}
    if answer.get("sec-websocket-accept") != _native.ws_accept_key(key):
        await trio.aclose_forcefully(stream)
        raise UpstreamRejected(status, "with a wrong Sec-WebSocket-Accept")
    connection = NativeWebSocketConnection(
        stream, _native.WsConnection(max_message_bytes, client=True))
    connection._reader_nursery, connection._initial = nursery, leftover
    connection._start_reading()
    return connection


async def open_reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A listener on ``host:port`` with SO_REUSEPORT, so several worker processes listen
    on one port and the kernel spreads connections among them."""
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    await sock.bind((host, port))
    sock.listen(1024)
    return trio.SocketListener(sock)


async def serve_native_websocket(handler: Handler, host: str | None, port: int, *,
                                 ssl_context: ssl.SSLContext | None = None,
                                 max_message_bytes: int = TRANSPORT_MAX_MESSAGE,
                                 reuse_port: bool = False,
                                 pending: PendingConnections | None = None,
                                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                                 answering_at_once: int = ANSWERING_AT_ONCE,
                                 task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve forever; reports the bound port through `task_status`. A handler's
    exception, or a panic in a native call (a BaseException), is logged and ends its own
    connection only (closed with 1011 if it was a WebSocket). ``pending`` bounds the
    connections not answered yet (in total and per client address): past it, a new
    connection gets 503 at once. At most ``answering_at_once`` WebSocket requests are
    in their handler before it answers them; the rest wait their turn, in order."""
    pending = pending if pending is not None else PendingConnections()
    answering = trio.Semaphore(answering_at_once)

    async def on_stream(stream: trio.abc.Stream) -> None:
        address = _peer_address(stream)
        if not pending.admit(address):
            with trio.move_on_after(1.0):
                try:
                    await stream.send_all(BUSY_RESPONSE)
                except _OK_ERRORS:
                    pass
            await trio.aclose_forcefully(stream)
            return
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                pending.leave(address)

        parked = False
        with _FailuresLogged():
            try:
                parked = await _serve_connection(
                    stream, handler, max_message_bytes, answered_hook=leave,
                    handshake_timeout=handshake_timeout, parking=parking,
                    answering=answering)
            finally:
                leave()
                if not parked:
                    await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        parking = ParkedConnections()
        await nursery.start(parking.run, _resumed)
        serve: Callable[..., Awaitable[object]]
        if reuse_port:
            listener: Any = await open_reuse_port_listener(host or "0.0.0.0", port)
            if ssl_context is not None:
                listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
            serve = partial(trio.serve_listeners, on_stream, [listener])
        elif ssl_context is None:
            serve = partial(trio.serve_tcp, on_stream, port, host=host)
        else:
            serve = partial(trio.serve_ssl_over_tcp, on_stream, port, ssl_context,
                            host=host, https_compatible=True)
        listeners = await nursery.start(serve)
        listener = listeners[0]
        sock = listener.transport_listener.socket if ssl_context is not None else listener.socket
        task_status.started(sock.getsockname()[1])


def _peer_address(stream: trio.abc.Stream) -> str:
    """The client's IP address (the one bound that counts per address)."""
    inner: Any = getattr(stream, "transport_stream", stream)
    try:
        return str(inner.socket.getpeername()[0])
    except (AttributeError, OSError):
        return "?"


class _FailuresLogged:
    """One connection's failure must not stop the server: it is logged (a peer gone is
    not), and cancellation (KeyboardInterrupt, SystemExit) goes on. (A class, not a
    generator: every waiting connection holds one, and a generator's frame is ~0.5 KiB.)"""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        if exc is None or isinstance(exc, _OK_ERRORS):
            return exc is not None
        if not only_failures(exc):
            return False
        if not _only_ok_errors(exc):
            log.error("native WebSocket connection failed", exc_info=exc)
        return True


def _only_ok_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_ok_errors(e) for e in exc.exceptions)
    return isinstance(exc, _OK_ERRORS)
