"""Idle connections with no task: an accepted, authenticated WebSocket that has not sent
its first message waits here, its socket in one epoll set watched by one task per
server, its clocks in the worker's timer heap (`session_timer.Deadlines`). The handler
that parked it has returned; when the peer speaks (or closes), when its first deadline
comes, on a `wake`, or when a heartbeat ping goes unanswered, the connection's `resume`
runs in a task of this server's, as the rest of that handler.

Why: a task with its chain of frames, cancel scopes and the session's bridge was most of
the 22 KiB an idle connection cost (issue 12 point 3; a bare `websockets` server holds
one in about 10). A parked one holds its socket, its frame codec, the session object and
its ledger row. The heartbeat goes on while parked: the ping is written from the timer's
task and a pong is read here, so a connection that only answers pings stays parked.
docs/decisions.md, "Parked connections"."""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from slng_fast.gateway.session_timer import SessionTimer
from slng_fast.gateway.transport import Awoken

log = logging.getLogger(__name__)

_EPOLL: Any = getattr(select, "epoll", None)  # Linux; elsewhere nothing parks


class ParkedPeer(Protocol):
    """What a parked connection does for its wait (`NativeWebSocketConnection`)."""

    def fileno(self) -> int: ...

    def read_parked(self) -> bool | None:
        """Read what the peer sent: True when it was pongs only, False when there was
        nothing to read (both: stay parked), None for anything else (resume)."""

    def ping_parked(self) -> bool:
        """Write a heartbeat ping now: False when the kernel did not take it whole."""

    def drop_parked(self) -> None:
        """Close the socket (the server is going away with the connection parked)."""


class _Parked:
    __slots__ = ("fd", "peer", "resume", "parked_at", "wake_at", "heartbeat_s", "ping_at",
                 "pong_by", "timer", "lot")

    def __init__(self, lot: ParkedConnections, peer: ParkedPeer,
                 resume: Callable[[Awoken], Awaitable[None]], wake_at: float,
                 heartbeat_s: float) -> None:
        self.lot = lot
        self.fd = peer.fileno()
        self.peer = peer
        self.resume = resume
        self.parked_at = trio.current_time()
        self.wake_at = wake_at
        self.heartbeat_s = heartbeat_s
        self.ping_at = self.parked_at + heartbeat_s
        self.pong_by = math.inf  # a ping is waiting for its pong until then
        self.timer = SessionTimer(self)

    def deadline(self) -> None:
        """(The timer's session has no deadline of its own: only `clock`.)"""
        return None

    def clock(self, now: float) -> float | None:
        if now >= self.wake_at:
            self.lot.resume(self)
            return None
        if now >= self.pong_by:
            self.lot.resume(self, pong_missed=True)
            return None
        if now >= self.ping_at:
            if not self.peer.ping_parked():
                self.lot.resume(self)
                return None
            self.ping_at, self.pong_by = math.inf, now + self.heartbeat_s
        return min(self.wake_at, self.ping_at, self.pong_by)

    def answered(self, now: float) -> None:
        """A pong came: the next ping one interval on, as a session's."""
        if math.isfinite(self.pong_by):
            self.ping_at, self.pong_by = now + self.heartbeat_s, math.inf
            self.timer.wake()


class ParkedConnections:
    """One server's parked connections (`run` in its nursery, which also runs each
    resumed connection's task)."""

    def __init__(self) -> None:
        self._epoll = _EPOLL() if _EPOLL is not None else None
        self._parked: dict[int, _Parked] = {}
        self._by_peer: dict[int, _Parked] = {}
        self._nursery: trio.Nursery | None = None
        self._run_resumed: Callable[[Any, Callable[[Awoken], Awaitable[None]], Awoken],
                                    Awaitable[None]] | None = None

    def __len__(self) -> int:
        return len(self._parked)

    @property
    def available(self) -> bool:
        return self._epoll is not None and self._nursery is not None

    def park(self, peer: ParkedPeer, resume: Callable[[Awoken], Awaitable[None]],
             wake_at: float, heartbeat_s: float) -> None:
        assert self._epoll is not None
        parked = _Parked(self, peer, resume, wake_at, heartbeat_s)
        self._epoll.register(parked.fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._parked[parked.fd] = self._by_peer[id(peer)] = parked
        parked.timer.start(_nothing, parked.clock)

    def wake(self, peer: ParkedPeer) -> None:
        """Resume ``peer`` now if it is parked."""
        parked = self._by_peer.get(id(peer))
        if parked is not None:
            self.resume(parked)

    def resume(self, parked: _Parked, *, pong_missed: bool = False) -> None:
        if self._parked.pop(parked.fd, None) is None:
            return
        del self._by_peer[id(parked.peer)]
        assert self._epoll is not None and self._nursery is not None
        self._epoll.unregister(parked.fd)
        parked.timer.stop()
        ping_at = parked.pong_by if math.isfinite(parked.pong_by) else parked.ping_at
        assert self._run_resumed is not None
        self._nursery.start_soon(self._run_resumed, parked.peer, parked.resume,
                                 Awoken(parked.parked_at, ping_at, pong_missed))

    async def run(self, run_resumed: Callable[[Any, Callable[[Awoken], Awaitable[None]],
                                               Awoken], Awaitable[None]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the parked sockets; ``run_resumed(peer, resume, awoken)`` is the task
        of each connection that wakes."""
        self._run_resumed = run_resumed
        epoll = self._epoll
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                if epoll is None:
                    return
                while True:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                    self._read(epoll.poll(0))
        finally:
            self._nursery = None
            for parked in self._parked.values():
                parked.timer.stop()
                parked.peer.drop_parked()
            self._parked.clear()
            self._by_peer.clear()
            if epoll is not None:
                epoll.close()


    def _read(self, ready: list[tuple[int, int]]) -> None:
        """The parked sockets with input. (A function of its own so that no connection
        outlives its wait in the waiting frame's locals.)"""
        for fd, _ in ready:
            parked = self._parked.get(fd)
            if parked is None:
                continue
            try:
                pong = parked.peer.read_parked()
            except Exception:  # its own task goes on from here
                log.exception("reading a parked connection failed")
                pong = None
            if pong is None:
                self.resume(parked)
            elif pong:
                parked.answered(trio.current_time())


def _nothing() -> None:
    pass
