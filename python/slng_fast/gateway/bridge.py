"""One session's I/O: a client reader, the upstream links, and the timers all feed one
bounded inbox; a single loop hands each item to the sans-I/O session and carries out
the actions it returns, in order. A slow client therefore slows the loop, which fills the
inbox, which stops reading the upstream: backpressure instead of unbounded memory.

The one exception is the data plane: once the session lends a stream's steady-state
audio to it (`StartRelay`), the upstream connection relays each read straight to the
client (`transport.Relay`), in its own reader task, and reports what went through to
the session. A slow client then stalls that reader, so the upstream socket is not read:
the same backpressure. The relay stops at the first message it does not own, which
comes through the inbox like any other; it is engaged only while nothing of its link
waits in the inbox, so order is kept (docs/decisions.md, "The data plane boundary").
The STT direction is the mirror image (`StartUplink`): the client's connection carries
each read of client audio straight to the upstream (`transport.Uplink`), engaged only
while no client message waits in the inbox and every frame the session queued for the
upstream has been written; a slow provider then stalls the client's reader."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from slng_fast import errors
from slng_fast._native import PanicException, RelayReport
from slng_fast.errors import GatewayError
from slng_fast.gateway.event_hooks import when_set
from slng_fast.gateway.inbox import (
    ClientTooLarge,
    EndRequested,
    FromClient,
    FromUpstream,
    InboxItem,
    KeepaliveDue,
    UpstreamClosed,
    UpstreamConnected,
    UpstreamFailed,
    item_size,
)
from slng_fast.gateway.native_transport import open_native_upstream
from slng_fast.gateway.queues import WOKEN, ByteBoundedQueue
from slng_fast.gateway.session_timer import SessionTimer
from slng_fast.gateway.transport import (
    PEER_NOT_READING,
    Awoken,
    Connection,
    ConnectionClosed,
    MessageSink,
    MessageTooLarge,
    Relay,
    Uplink,
    UpstreamRejected,
    open_upstream,
)
from slng_fast.metrics import Metrics
from slng_fast.protocol.actions import (
    Action,
    CloseClient,
    CloseUpstream,
    OpenUpstream,
    SendClient,
    SendUpstream,
    StartRelay,
    StartUplink,
    StopRelay,
    StopUplink,
)
from slng_fast.protocol.stt import SttSession
from slng_fast.protocol.tts import TtsSession
from slng_fast.vocabulary import UpstreamRequest

log = logging.getLogger("slng_fast.session")

INBOX_SIZE = 64
INBOX_BYTES = 256 * 1024
UPSTREAM_OUTBOX_SIZE = 1024
UPSTREAM_OUTBOX_BYTES = 1024 * 1024
CLOSE_TIMEOUT = 2.0
RECONNECT_BACKOFF = (0.25, 0.5, 1.0)
# Seconds an upstream may take to accept one frame of ours before it counts as stalled.
UPSTREAM_SEND_TIMEOUT = 10.0


@dataclass(slots=True)
class UpstreamLink:
    """One upstream connection of the session's. It has a task only while it connects
    and while its outbox has frames to write (`SessionBridge._write_link`); its reader
    is its connection's, in the bridge's nursery: an idle link, a stream lent to the
    data plane, costs no task of its own (issue 12 point 3)."""

    epoch: int
    outbox: ByteBoundedQueue[Any]
    # Entered while connecting; cancelled when the session lets go of the link.
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    conn: Connection | None = None  # once open
    backlog: int = 0  # its messages waiting in the inbox
    unsent: int = 0  # frames put in its outbox and not yet written
    flushed: trio.Event | None = None  # set once `unsent` is back to 0 (for a waiter)
    writing: bool = True  # a task writes the outbox (the connecting one, at first)
    writer: trio.CancelScope | None = None  # that task's, while it writes
    give_back: Callable[[], None] | None = None  # a warm connection's, for the link's end
    ended: bool = False  # it carries nothing more (`_end_link`): no writer starts

    def sent_one(self) -> None:
        self.unsent = max(0, self.unsent - 1)
        if not self.unsent and self.flushed is not None:
            self.flushed.set()
            self.flushed = None

    async def wait_flushed(self) -> None:
        while self.unsent:
            if self.flushed is None:
                self.flushed = trio.Event()
            await self.flushed.wait()


@dataclass
class OutsideEnd:
    """Ends a running session from outside it (its key was revoked): the session then
    fails with ``error`` as if one of its own steps had raised it. The running bridge
    sets ``hook`` (a call, not a task waiting on an event: issue 12 point 3)."""

    error: GatewayError | None = None
    hook: Callable[[], None] | None = None

    def end(self, error: GatewayError) -> None:
        if self.error is None:
            self.error = error
            if self.hook is not None:
                self.hook()


class SessionBridge:
    # One per connection, with more attributes than an instance dict shares keys for:
    # slots save about 1.3 KiB each (issue 12 point 3).
    __slots__ = ("_deadline_due", "_uplink_epoch", "_pending", "_held", "client_backlog", "_drain_due", "_end", "_end_at", "_heartbeat_s", "_idle_s",
                 "_keepalives", "_loop_task", "_ping_at", "_waiting", "added_latency",
                 "client_gone", "conn", "connect_timeout", "draining", "inbox", "last_client",
                 "links", "metrics", "nursery", "on_provider_failed", "open_upstream",
                 "opened_upstreams", "outside_end", "provider", "session", "shutdown", "slow",
                 "slow_client_timeout", "take_message", "timer", "upstream_send_timeout",
                 "warm", "awoken")

    def __init__(self, conn: Connection, session: TtsSession | SttSession, *, shutdown: trio.Event,
                 connect_timeout: float = 10.0, metrics: Metrics | None = None,
                 slow_client_timeout: float = 10.0,
                 take_message: Callable[[float], Awaitable[float]] | None = None,
                 transport: str = "native",
                 upstream_send_timeout: float = UPSTREAM_SEND_TIMEOUT,
                 draining: trio.Event | None = None,
                 outside_end: OutsideEnd | None = None,
                 on_provider_failed: Callable[[str, str], None] | None = None,
                 warm: Any = None, awoken: Awoken | None = None) -> None:
        # From a parked wait (gateway/parking.py): the clocks run from the park.
        self.awoken = awoken
        # The worker's warm connections (gateway/warm_pool.py), tried before opening one.
        self.warm = warm
        # A provider failed this session (name, reason): the worker's health hears of it.
        self.on_provider_failed = on_provider_failed
        self.outside_end = outside_end
        self.open_upstream = open_native_upstream if transport == "native" else open_upstream
        # The messages-per-minute check, asked before a text frame reaches the session
        # (it may wait on a shared backend, so not in the session's own step).
        self.take_message = take_message
        self.slow_client_timeout = slow_client_timeout
        self.upstream_send_timeout = upstream_send_timeout
        self.slow = False
        self.conn = conn
        self.session = session
        self.metrics = metrics if metrics is not None else Metrics()
        self.provider = session.endpoint.name
        self.added_latency = self.metrics.histogram("slng_added_latency_seconds",
                                                    provider=self.provider)
        self.opened_upstreams = 0
        self.shutdown = shutdown
        self.connect_timeout = connect_timeout
        # (Not `ByteBoundedQueue[...](...)`: a subscripted call gives the instance an
        # ``__orig_class__``, a dict per queue.)
        self.inbox: ByteBoundedQueue[InboxItem] = ByteBoundedQueue(INBOX_SIZE, INBOX_BYTES,
                                                                   size=item_size)
        self.links: dict[int, UpstreamLink] = {}
        self.last_client = trio.current_time() if awoken is None else awoken.parked_at
        self.client_gone = False
        # Client messages received and not yet taken by the loop; the upstream epoch the
        # client's audio is lent to (`StartUplink`), if any.
        self.client_backlog = 0
        self._uplink_epoch: int | None = None
        # A relay or uplink the session asked for while messages from its source still
        # waited for the loop: the source's reads are held (`_held`) until the loop has
        # handled them, then it starts (`_lend_caught_up`). Without the hold, a source
        # that sends faster than the loop runs keeps a backlog, the stream is never
        # lent, and the session's own path (the slower one) carries everything: the
        # worker falls behind for good. A message of that source reaching the session
        # supersedes the request (a TTS session takes such a message as the relay's end
        # and asks again at the end of its step if it still wants one): lending on a
        # request the session no longer stands by would relay behind its back.
        self._pending: StartRelay | StartUplink | None = None
        self._held: Connection | None = None
        # A deadline that fired (maximum duration, idle, heartbeat, shutdown) or a client
        # gone while the inbox was full: it ends the session without waiting in the
        # inbox, and interrupts whatever the loop is waiting for (an inbox item, room in
        # a slow upstream's outbox), so no deadline depends on a queue being read.
        self._end: EndRequested | None = None
        self._waiting: trio.CancelScope | None = None
        self._loop_task: trio.lowlevel.Task | None = None
        # The session's own deadline (`session.deadline()`), which interrupts the loop the
        # same way and runs `session.on_deadline(now)` as the loop's next step.
        self.timer = SessionTimer(session)
        self._deadline_due = False
        # Draining for a rolling deploy: the session ends once nothing is in flight.
        self.draining = draining if draining is not None else trio.Event()
        self._drain_due = False

    async def run(self, nursery_for_upstreams: trio.Nursery | None = None) -> None:
        tier = self.session.tier
        # The worker's shutdown and drain, and a revocation, reach the session by a call
        # (gateway/event_hooks.py), not a task each: fewer tasks per connection.
        unhook = [when_set(self.shutdown, partial(self.request_end, EndRequested("shutdown"))),
                  when_set(self.draining, self._drain_now)]
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._read_client)
            self._idle_s = tier.idle_timeout_s
            awoken = self.awoken
            start = trio.current_time() if awoken is None else awoken.parked_at
            self._end_at = start + tier.max_duration_s \
                if math.isfinite(tier.max_duration_s) else math.inf
            self._heartbeat_s = tier.heartbeat_s
            self._ping_at = start + tier.heartbeat_s if awoken is None else awoken.ping_at
            if awoken is not None and awoken.pong_missed:
                self.request_end(EndRequested("heartbeat_timeout"))
            self._keepalives: dict[float, float] = {}  # interval: when it is next due
            self.timer.start(self._deadline_passed, self._clock)
            outside = self.outside_end
            if outside is not None:
                outside.hook = self._outside_ended
                if outside.error is not None:
                    self._outside_ended()
            self._keep_alive()
            try:
                self._loop_task = trio.lowlevel.current_task()
                await self._loop()
            finally:
                self.timer.stop()
                for remove in unhook:
                    remove()
                if outside is not None:
                    outside.hook = None
                for link in list(self.links.values()):
                    self._let_go(link)
                nursery.cancel_scope.cancel()
                # Nobody reads the inbox now: a connection's reader waiting for room in
                # it (the client's is not in this nursery) goes on, and drops the rest.
                self.inbox.close()
                self._release_held()
                self.conn.stop_uplink()  # it holds this bridge: no cycle left behind
                with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                    scope.shield = True
                    if not self.client_gone:
                        try:
                            await self.conn.close(1011, "internal error")
                        except Exception:
                            pass

    def _deadline_passed(self) -> None:
        self._deadline_due = True
        self._interrupt()

    def request_end(self, item: EndRequested) -> None:
        """End the session for ``item`` as soon as the loop can, without queueing behind
        anything."""
        if self._end is None:
            self._end = item
        self._interrupt()

    def _interrupt(self) -> None:
        """Wake the loop from its wait, whatever it waits for, to look at its flags."""
        if self._waiting is not None:
            self._waiting.cancel()
        self.inbox.wake_getter()

    async def _interruptible(self, wait: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run ``wait()`` in the loop so that `request_end` can interrupt it: (finished,
        its result). Elsewhere (an upstream reader ending a session whose client is gone)
        it simply runs."""
        if trio.lowlevel.current_task() is not self._loop_task:
            return True, await wait()
        with trio.CancelScope() as scope:
            if self._end is not None:
                scope.cancel()
            self._waiting = scope
            try:
                result = await wait()
            finally:
                self._waiting = None
        if scope.cancelled_caught:
            return False, None
        return True, result

    def _end_actions(self, item: EndRequested, now: float) -> list[Action]:
        session = self.session
        kind = item.reason
        if kind == "client_closed":
            self.client_gone = True
            return session.end("client_closed", now)
        if kind == "slow_client":
            self.client_gone = self.slow = True
            return session.end("slow_client", now, close_code=1008,
                               close_reason="client too slow")
        if kind == "heartbeat_timeout":
            return session.end("idle_timeout", now, close_reason="no pong")
        if kind == "shutdown":
            return session.end("server_shutdown", now, close_code=errors.CLOSE_GOING_AWAY)
        if kind == "outside_end" and item.error is not None:  # e.g. the key was revoked
            return session.fail(item.error, now)
        return session.end(kind, now)

    async def _loop(self) -> None:
        session = self.session
        while True:
            if self._end is not None:
                actions = self._end_actions(self._end, trio.current_time())
                if not actions:  # ended already (its close was cut short): close anyway
                    actions = [CloseClient(errors.CLOSE_NORMAL, session.ended or "ended")]
                if await self._execute(actions):
                    return
                self._record(session)
                continue
            if self._deadline_due or self._drain_due:
                now = trio.current_time()
                try:
                    if self._drain_due:
                        self._drain_due = False
                        actions = session.drain(now)
                    else:
                        self._deadline_due = False
                        actions = session.on_deadline(now)
                except Exception as exc:
                    actions = self._fault(exc, now)
                if await self._execute(actions):
                    return
                self._record(session)
                self.timer.check()
                continue
            if self._held is not None and (self._pending is None
                                           or self._caught_up(self._pending)):
                await self._lend_caught_up()
            # Not held while waiting: the last step's frames (a stream lent to the data
            # plane waits here for most of its life).
            # (The wait is woken, not cancelled, by `_interrupt`: no cancel scope is held
            # through a stream's life.)
            actions, item = [], None
            item = await self.inbox.get_or_woken()
            if item is WOKEN:
                continue
            now = trio.current_time()
            pending = self._pending
            if isinstance(item, FromClient):
                self.client_backlog -= 1
                if isinstance(pending, StartUplink):
                    self._pending = None  # superseded: the session asks again if it will
            elif isinstance(item, FromUpstream):
                link = self.links.get(item.epoch)
                if link is not None:
                    link.backlog -= 1
                if isinstance(pending, StartRelay) and pending.epoch == item.epoch:
                    self._pending = None  # superseded (the session no longer relays)
            try:
                actions = self._step(item, now)
            except (Exception, PanicException) as exc:
                actions = self._fault(exc, now)
            sent = await self._execute(actions)
            if isinstance(item, FromUpstream) and any(isinstance(a, SendClient)
                                                      for a in actions):
                self.added_latency.observe(trio.current_time() - item.received_at)
            self._record(session)
            if sent:
                return
            self.timer.check()

    def _step(self, item: InboxItem, now: float) -> list[Action]:
        """Hand one inbox item to the session; the actions it answers."""
        session = self.session
        if isinstance(item, FromClient):
            if isinstance(item.frame, str):
                return session.receive_text(item.frame, now, rate_wait=item.rate_wait)
            return session.receive_binary(item.frame, now)
        if isinstance(item, FromUpstream):
            return session.receive_upstream(item.epoch, item.frame, now)
        if isinstance(item, UpstreamConnected):
            return session.upstream_connected(item.epoch, now)
        if isinstance(item, UpstreamFailed):
            return session.upstream_failed(item.epoch, item.message, now, item.status)
        if isinstance(item, UpstreamClosed):
            self._forget_link(item.epoch)
            return session.upstream_closed(item.epoch, now, item.code, item.reason)
        if isinstance(item, ClientTooLarge):
            return session.message_too_large(item.reason, now)
        if isinstance(item, KeepaliveDue):
            return session.keepalive(now)
        return self._end_actions(item, now)

    def _fault(self, exc: BaseException, now: float) -> list[Action]:
        """A session step raised, or a native call in it panicked: it fails this session
        only (call from the except block, so an unexpected fault is logged with its
        traceback)."""
        if not isinstance(exc, GatewayError):
            what = "native panic" if isinstance(exc, PanicException) else "session fault"
            log.exception(what, extra={"context_id": self.session.context_id})
            exc = GatewayError(errors.INTERNAL_ERROR, "internal error in the gateway")
        return self.session.fail(exc, now)

    def _record(self, session: Any) -> None:
        for what, value in session.observations:
            if what == "error":
                self.metrics.error(value)
            elif what == "first_audio":
                self.metrics.observe("slng_time_to_first_audio_seconds", value,
                                     provider=self.provider)
            elif what == "provider_switched":
                self._keep_alive()  # the backup may need keep-alives the first did not
                old, new, reason = value
                self.metrics.inc("slng_provider_switches_total", **{
                    "from": old, "to": new, "reason": reason})
            elif what == "provider_failed" and self.on_provider_failed is not None:
                self.on_provider_failed(*value)
        session.observations.clear()

    async def _execute(self, actions: list[Action]) -> bool:
        """Carry out actions in order; True when the session is over."""
        for action in actions:
            if isinstance(action, SendClient):
                if self.client_gone:
                    continue
                try:
                    delivered = await self.conn.send_within(action.frame, self.slow_client_timeout,
                                                            text=action.text)
                except ConnectionClosed as exc:
                    if exc.reason == PEER_NOT_READING:
                        return await self._client_too_slow()
                    return await self._client_lost()
                if not delivered:
                    return await self._client_too_slow()
            elif isinstance(action, SendUpstream):
                link = self.links.get(self.session.upstream_epoch)
                if link is not None and not await self._to_upstream(link, action.frame):
                    return False  # a deadline interrupted the wait: the loop ends it
            elif isinstance(action, OpenUpstream):
                self.opened_upstreams += 1
                if self.opened_upstreams > 1:
                    self.metrics.inc("slng_upstream_reconnects_total", provider=self.provider)
                self._open_link(action)
            elif isinstance(action, StartRelay):
                self._start_relay(action)
            elif isinstance(action, StopRelay):
                self._forgo(action.epoch)
                link = self.links.get(action.epoch)
                if link is not None and link.conn is not None:
                    link.conn.stop_relay()
            elif isinstance(action, StartUplink):
                await self._start_uplink(action)
            elif isinstance(action, StopUplink):
                self._stop_uplink()
            elif isinstance(action, CloseUpstream):
                self._close_link(action.epoch)
            elif isinstance(action, CloseClient):
                for epoch in list(self.links):
                    self._close_link(epoch)
                if not self.client_gone:
                    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                        scope.shield = True
                        try:
                            await self.conn.close(action.code, action.reason[:120])
                        except Exception:
                            pass
                    self.client_gone = True
                return True
        return False

    async def _to_upstream(self, link: UpstreamLink, frame: Any) -> bool:
        """Queue a frame for the upstream; when its outbox is full, wait for room (so a
        client faster than its provider is slowed: this loop stops reading the inbox,
        the inbox fills, the client's socket is no longer read). False if a deadline
        interrupted the wait. A link that has ended drops the frame: its own end is
        reported through the inbox."""
        try:
            link.outbox.put_nowait(frame)
            link.unsent += 1
            self._wake_writer(link)
            return True
        except trio.WouldBlock:
            pass  # (a writer runs: the outbox is not empty)
        except trio.ClosedResourceError:
            return True
        try:
            finished, _ = await self._interruptible(lambda: link.outbox.put(frame))
        except trio.ClosedResourceError:
            return True
        if finished:
            link.unsent += 1
            self._wake_writer(link)
        return finished

    async def _client_lost(self) -> bool:
        # Ended here, not through the inbox: the loop may be the inbox's only reader, so a
        # full inbox would never drain.
        self.client_gone = True
        if self._end is not None:  # an end asked for first (a shutdown) names the reason
            return await self._execute(self._end_actions(self._end, trio.current_time()))
        return await self._execute(self.session.end("client_closed", trio.current_time()))

    async def _client_too_slow(self) -> bool:
        # The client has not taken a frame for that long: memory stays bounded (the sender
        # waits, the upstream is not read), and the session ends instead of waiting for
        # ever. Its socket is unusable now (a frame was cut), so it is dropped without a
        # close handshake.
        self._log_too_slow()
        self.client_gone = True
        self.slow = True
        with trio.CancelScope(shield=True):
            await self.conn.abort()
        return await self._execute(self.session.end("slow_client", trio.current_time(),
                                                    close_code=1008, close_reason="client too slow"))

    def _log_too_slow(self) -> None:
        log.warning("client too slow: no frame taken in %.0f s", self.slow_client_timeout,
                    extra={"context_id": self.session.context_id})

    # -- upstream links ------------------------------------------------------------------
    def _open_link(self, action: OpenUpstream) -> None:
        outbox: ByteBoundedQueue[Any] = ByteBoundedQueue(UPSTREAM_OUTBOX_SIZE,
                                                         UPSTREAM_OUTBOX_BYTES)
        link = UpstreamLink(action.epoch, outbox)
        self.links[action.epoch] = link
        self.nursery.start_soon(self._connect_link, link, action.request)

    def _close_link(self, epoch: int) -> None:
        self._stop_uplink(epoch)
        link = self.links.pop(epoch, None)
        self._link_going(link, epoch)
        if link is not None:
            if link.conn is not None:
                link.conn.stop_relay()
            link.outbox.close()
            if link.conn is None and not link.writing:  # its connection ended already
                self._end_link(link)
            else:
                self._wake_writer(link)  # it sends what is queued, then closes the socket

    def _forget_link(self, epoch: int) -> None:
        self._stop_uplink(epoch)
        link = self.links.pop(epoch, None)
        self._link_going(link, epoch)
        if link is not None:
            self._let_go(link)

    def _let_go(self, link: UpstreamLink) -> None:
        """Stop whatever runs for the link (its connecting, its writer) and end it."""
        link.cancel_scope.cancel()
        if link.writer is not None:
            link.writer.cancel()
        self._end_link(link)

    def _end_link(self, link: UpstreamLink) -> None:
        """The link carries nothing more: whoever waits for room in its outbox, or for
        its frames to be written, stops waiting; a warm connection goes back."""
        link.ended = True
        link.outbox.close()
        link.unsent = 0
        link.sent_one()
        give_back, link.give_back = link.give_back, None
        if give_back is not None:
            give_back()  # to its pool, which drops it

    async def _connect_link(self, link: UpstreamLink, request: UpstreamRequest) -> None:
        """Open the link's connection (a warm one if the worker has it), its reader in
        this bridge's nursery; then write what was queued meanwhile."""
        conn = failure = None
        with link.cancel_scope:
            try:
                taken = self.warm.take(self.session.serving, request) \
                    if self.warm is not None else None
                if taken is not None:
                    conn, link.give_back = taken
                    self.metrics.inc("slng_warm_connections_used_total",
                                     provider=self.session.serving)
                else:
                    conn = await self._open_with_backoff(request, self.nursery)
            except OSError as exc:
                failure = UpstreamFailed(link.epoch, f"cannot reach the provider: {exc}",
                                         getattr(exc, "status", None))
            except Exception as exc:  # a fault here must end this session only, cleanly
                log.exception("opening the upstream failed",
                              extra={"context_id": self.session.context_id})
                failure = UpstreamFailed(link.epoch, f"cannot reach the provider: {exc}")
        if conn is None or link.cancel_scope.cancel_called:
            self._end_link(link)
            if conn is not None:  # let go of before it started (a warm one is taken at once)
                await conn.abort()
            if failure is not None:
                await self._from_reader(failure)
            return
        link.conn = conn
        # Before its messages; never waiting for room: the loop may be waiting for this
        # task to write what it queued.
        try:
            self.inbox.put_nowait(UpstreamConnected(link.epoch), past_bounds=True)
        except trio.ClosedResourceError:
            pass
        self.nursery.start_soon(self._read_upstream, link, conn)
        await self._write_link(link, conn)

    def _wake_writer(self, link: UpstreamLink) -> None:
        """A frame was queued, or the outbox closed: a task writes it, unless one is
        already at it (the connecting task writes once the connection is open)."""
        if not link.writing and not link.ended and link.conn is not None:
            link.writing = True
            self.nursery.start_soon(self._write_link, link, link.conn)

    async def _write_link(self, link: UpstreamLink, conn: Connection) -> None:
        """Write the link's outbox to ``conn`` until it is empty (then this task ends)
        or closed by the session (then close the connection)."""
        outbox = link.outbox
        try:
            with trio.CancelScope() as link.writer:
                while True:
                    try:
                        frame = outbox.get_nowait()
                    except trio.WouldBlock:
                        return  # nothing to write: no task until there is
                    except trio.EndOfChannel:
                        break
                    try:
                        delivered = await conn.send_within(frame, self.upstream_send_timeout)
                        link.sent_one()
                    except ConnectionClosed as exc:
                        # The provider's side is gone (a reset seen while writing): said
                        # here, and not by its reader as well (the outbox is closed).
                        self._end_link(link)
                        await conn.abort()
                        await self._from_reader(UpstreamClosed(
                            link.epoch, exc.code, exc.reason or "the provider's connection broke"))
                        return
                    if not delivered:  # the provider has stopped reading: it is stalled
                        self._end_link(link)
                        await conn.abort()
                        await self._from_reader(UpstreamFailed(
                            link.epoch,
                            f"the provider took no data for {self.upstream_send_timeout:g} s"))
                        return
                # Closed by the session (stop, configure, end): close the socket, and
                # drop it if the provider does not answer our close in time (its reader
                # would otherwise wait for that answer as long as the session lives).
                self._end_link(link)
                with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                    scope.shield = True
                    try:
                        await conn.close(1000, "")
                    except Exception:
                        pass
                if scope.cancelled_caught:
                    with trio.CancelScope(shield=True):
                        await conn.abort()
        finally:
            link.writer = None
            link.writing = False
            if outbox.closed and not link.ended:  # cancelled with the session, say
                self._end_link(link)

    async def _open_with_backoff(self, request: Any, nursery: trio.Nursery) -> Connection:
        """Open the upstream, retrying a refused or failed connection (not a refused
        handshake: that is the provider's answer) after 0.25, 0.5 and 1 s, all within one
        budget of ``connect_timeout`` seconds: a provider that cannot be reached is given
        up on in that time, however its attempts fail."""
        deadline = trio.current_time() + self.connect_timeout
        for delay in (*RECONNECT_BACKOFF, None):
            left = deadline - trio.current_time()
            try:
                if left <= 0:
                    raise OSError(f"no connection within {self.connect_timeout:g} s")
                return await self.open_upstream(request.url, list(request.headers),
                                                list(request.subprotocols), nursery,
                                                connect_timeout=left)
            except OSError as exc:
                if isinstance(exc, UpstreamRejected) or delay is None \
                        or trio.current_time() + delay >= deadline:
                    raise
                log.warning("upstream connection failed (%s); retrying in %.2f s", exc, delay,
                            extra={"context_id": self.session.context_id})
                await trio.sleep(delay)
        raise AssertionError("unreachable")

    async def _read_upstream(self, link: UpstreamLink, conn: Connection) -> None:
        """The provider's messages to the inbox. Where the transport has a reader of its
        own, this task ends once the messages read so far are queued: the reader hands
        on the rest, and the end (`Connection.deliver`)."""
        ended = partial(self._upstream_ended, link, conn)
        delivered = False
        try:
            delivered = await conn.deliver(MessageSink(
                partial(self._on_upstream, link.epoch), self._upstream_too_large, ended))
            if not delivered:
                await conn.pump(partial(self._on_upstream, link.epoch))
        except ConnectionClosed as exc:
            ended(exc)
        finally:
            if not delivered:  # else the reader's end does it (`_upstream_ended`)
                self._unlink(link, conn)

    async def _upstream_too_large(self, reason: str) -> None:
        raise AssertionError("an upstream's oversize message ends it as broken")

    def _upstream_ended(self, link: UpstreamLink, conn: Connection,
                        exc: ConnectionClosed) -> None:
        """The provider's connection ended (its reader's teardown): the loop is told,
        behind the messages before it, unless the session let go of the link first
        (stop, reconnect, its end) or its writer reports the fault (it closed the
        outbox first)."""
        self._unlink(link, conn)
        if link.outbox.closed or link.cancel_scope.cancel_called \
                or self.links.get(link.epoch) is not link:
            return
        epoch = link.epoch
        item = (UpstreamClosed(epoch, None,
                               f"the provider broke the WebSocket protocol ({exc.reason})")
                if exc.broken  # the close code is ours, not the provider's: it sent none
                else UpstreamClosed(epoch, exc.code, exc.reason))
        try:
            self.inbox.put_nowait(item)
        except trio.WouldBlock:
            self.nursery.start_soon(self._from_reader, item)
        except trio.ClosedResourceError:
            pass

    def _unlink(self, link: UpstreamLink, conn: Connection) -> None:
        # A relay holds the bridge, the link holds the connection: left in place they
        # make cycles that only the collector frees, which serving processes run
        # rarely (gateway/collector.py), so every session's objects would pile up.
        conn.stop_relay()
        self._stop_uplink(link.epoch)
        self._link_going(link, link.epoch)
        link.conn = None

    async def _on_upstream(self, epoch: int, frame: str | bytes) -> None:
        """A provider's message that the data plane does not carry: to the loop, in order."""
        link = self.links.get(epoch)
        if link is not None:
            link.backlog += 1
        await self._from_reader(FromUpstream(epoch, frame, trio.current_time()))

    # -- the data plane ------------------------------------------------------------------
    def _start_relay(self, action: StartRelay, may_hold: bool = True) -> None:
        """Hand the stream to the upstream connection once messages of its link that wait
        in the inbox are handled (they come first): if some wait, or the connection is
        still handing a read's messages on, hold its reads until the loop caught up."""
        link = self.links.get(action.epoch)
        if link is None or link.conn is None or self.client_gone:
            return
        if link.backlog or not link.conn.start_relay(
                Relay(action.relay, self.conn, self.slow_client_timeout,
                      partial(self._relayed, action.epoch), self.added_latency.observe,
                      self._relay_lost)):
            if may_hold:
                self._hold(link.conn, action)

    def _relayed(self, epoch: int, report: RelayReport) -> None:
        self.session.relayed(epoch, report, trio.current_time())

    async def _relay_lost(self, closed: ConnectionClosed | None) -> None:
        over = await (self._client_too_slow() if closed is None or closed.reason == PEER_NOT_READING
                      else self._client_lost())
        if over:
            self.nursery.cancel_scope.cancel()

    async def _start_uplink(self, action: StartUplink, may_hold: bool = True) -> None:
        """Hand the client's audio to the client connection once every frame the
        session queued for the upstream is written (they come first) and client
        messages that wait for the loop are handled (they come first too: the client's
        reads are held until then)."""
        link = self.links.get(action.epoch)
        if link is None or link.conn is None or self.client_gone:
            return
        if link.unsent:
            finished, _ = await self._interruptible(link.wait_flushed)
            if not finished or self.links.get(action.epoch) is not link or link.conn is None:
                return
        if self.client_gone:
            return
        if (self.client_backlog or not self._try_uplink(action)) and may_hold:
            self._hold(self.conn, action)

    def _try_uplink(self, action: StartUplink) -> bool:
        link = self.links.get(action.epoch)
        if link is None or link.conn is None:
            return False
        uplink = Uplink(action.uplink, link.conn, self.upstream_send_timeout,
                        partial(self._uplinked, action.epoch),
                        partial(self._uplink_lost, link))
        if not self.conn.start_uplink(uplink):
            return False
        self._uplink_epoch = action.epoch
        return True

    # -- lending once the loop caught up (see `_pending`) ------------------------------
    def _hold(self, conn: Connection, action: StartRelay | StartUplink) -> None:
        if self._held is not conn:
            self._release_held()  # one at a time: a session lends one stream
            if not conn.hold_reads():
                return
            self._held = conn
        self._pending = action

    def _release_held(self) -> None:
        held, self._held, self._pending = self._held, None, None
        if held is not None:
            held.release_reads()

    def _forgo(self, epoch: int | None = None) -> None:
        """The session took back what it asked to lend. The reads stay held until the
        loop's next turn: a step that takes a stream back to handle a message usually
        asks for it again at its end."""
        if self._pending is not None and epoch in (None, self._pending.epoch):
            self._pending = None

    def _link_going(self, link: UpstreamLink | None, epoch: int) -> None:
        """A link closes or is gone: its connection must read its peer's close now."""
        self._forgo(epoch)
        if link is not None and self._held is not None and self._held is link.conn:
            self._release_held()

    def _caught_up(self, action: StartRelay | StartUplink) -> bool:
        if isinstance(action, StartUplink):
            return not self.client_backlog
        link = self.links.get(action.epoch)
        return link is None or not link.backlog

    async def _lend_caught_up(self) -> None:
        """Every message its source read before the hold is handled: lend the stream
        still asked for (once: if the transport still refuses, the session asks again
        with its next message), and read again."""
        action, held = self._pending, self._held
        self._pending = self._held = None
        try:
            if isinstance(action, StartRelay):
                self._start_relay(action, may_hold=False)
            elif isinstance(action, StartUplink):
                await self._start_uplink(action, may_hold=False)
        finally:
            if held is not None:
                held.release_reads()

    def _stop_uplink(self, epoch: int | None = None) -> None:
        """Stop the uplink (only if it carries to ``epoch``, when one is given)."""
        if isinstance(self._pending, StartUplink):
            self._forgo(epoch)
        if self._uplink_epoch is not None and epoch in (None, self._uplink_epoch):
            self._uplink_epoch = None
            self.conn.stop_uplink()

    def _uplinked(self, epoch: int, report: RelayReport) -> None:
        self.last_client = now = trio.current_time()
        self.session.uplinked(epoch, report, now)

    async def _uplink_lost(self, link: UpstreamLink, closed: ConnectionClosed | None) -> None:
        """The uplink could not write to the upstream: what the link's writer reports
        for the same fault (the provider's connection broke, or it took no data)."""
        self._uplink_epoch = None
        conn = link.conn
        self._let_go(link)  # its writer and its reader: this is the link's one report
        if conn is not None:
            await conn.abort()
        if closed is not None:
            item: InboxItem = UpstreamClosed(link.epoch, closed.code,
                                             closed.reason or "the provider's connection broke")
        else:
            item = UpstreamFailed(link.epoch, f"the provider took no data for "
                                              f"{self.upstream_send_timeout:g} s")
        await self.inbox.put(item)

    # -- client and timers ------------------------------------------------------------------
    async def _read_client(self) -> None:
        """The client's messages to the inbox. Where the transport has a reader of its
        own, this task ends once the messages read so far are queued: the reader hands
        on the rest (one task fewer per session, `Connection.deliver`)."""
        if await self.conn.deliver(MessageSink(self._from_client, self._client_too_large,
                                               self._client_ended)):
            return
        while True:
            try:
                frame = await self.conn.receive()
            except ConnectionClosed as exc:
                self._client_ended(exc)
                return
            except MessageTooLarge as exc:
                await self._client_too_large(exc.reason)
                return
            await self._from_client(frame)

    async def _from_client(self, frame: str | bytes) -> None:
        self.client_backlog += 1
        self.last_client = trio.current_time()
        wait = None
        if isinstance(frame, str) and self.take_message is not None \
                and self.session.metered(frame):
            wait = await self.take_message(self.last_client)
        await self._from_reader(FromClient(frame, wait))

    async def _client_too_large(self, reason: str) -> None:
        await self._from_reader(ClientTooLarge(reason))

    async def _from_reader(self, item: InboxItem) -> None:
        """An item from a connection's reader (which may outlive the session): when the
        loop is behind, the reader waits for room (backpressure); once the session is
        over (the inbox closed), the item is dropped."""
        try:
            try:
                self.inbox.put_nowait(item)  # no checkpoint per message when there is room
            except trio.WouldBlock:
                await self.inbox.put(item)
        except trio.ClosedResourceError:
            pass

    def _client_ended(self, exc: ConnectionClosed) -> None:
        if exc.reason == PEER_NOT_READING:
            self._log_too_slow()
            self.request_end(EndRequested("slow_client"))
        else:
            self._client_closed()

    def _client_closed(self) -> None:
        # In order behind what the client sent before, when there is room; else at once.
        try:
            self.inbox.put_nowait(EndRequested("client_closed"))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.request_end(EndRequested("client_closed"))

    def _clock(self, now: float) -> float | None:
        """The idle timeout, the maximum duration, the heartbeat and the upstream's
        keep-alives (called by the session timer): when to look again, or None once the
        session is told to end."""
        if now >= self.last_client + self._idle_s:
            self.request_end(EndRequested("idle_timeout"))
            return None
        if now >= self._end_at:
            self.request_end(EndRequested("max_duration"))
            return None
        if now >= self._ping_at:  # a task only while a ping waits for its pong
            self._ping_at = math.inf
            self.nursery.start_soon(self._heartbeat, self._heartbeat_s)
        keepalives = self._keepalives
        for interval, due in keepalives.items():
            if now >= due:
                try:  # a keep-alive is only needed while nothing else flows
                    self.inbox.put_nowait(KeepaliveDue())
                except (trio.WouldBlock, trio.ClosedResourceError):
                    pass
                keepalives[interval] = now + interval
        return min(self.last_client + self._idle_s, self._end_at, self._ping_at,
                   *keepalives.values())

    def _keep_alive(self) -> None:
        """Keep-alives at the serving dialect's interval (a clock of the session's
        timer), if it has one not yet kept."""
        interval = self.session.dialect.keepalive_interval
        if interval and interval not in self._keepalives:
            self._keepalives[interval] = trio.current_time() + interval
            self.timer.wake()

    async def _heartbeat(self, interval: float) -> None:
        """One ping, ``interval`` seconds after the last pong (`_clock` starts it): no
        pong within ``interval`` ends the session; a pong sets the next ping's time."""
        with trio.move_on_after(interval):
            try:
                await self.conn.ping()
            except ConnectionClosed:
                return
            self._ping_at = trio.current_time() + interval
            self.timer.wake()
            return
        self.request_end(EndRequested("heartbeat_timeout"))

    def _drain_now(self) -> None:
        self._drain_due = True
        self._interrupt()

    def _outside_ended(self) -> None:
        assert self.outside_end is not None
        self.request_end(EndRequested("outside_end", self.outside_end.error))
