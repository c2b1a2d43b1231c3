"""Warm upstream connections (issue 13 point 6): per provider, up to ``[providers.X]
warm = N`` WebSockets opened ahead of time by the worker, so a new session skips the
TCP, TLS and WebSocket handshakes. A session takes one only when its upstream request
(URL, headers, subprotocols) is exactly the pool's: the endpoint's default request,
which for some providers is every session's and for others only the default voice's
(docs/providers.md, "Warm connections").

Each warm connection lives in a task of its own here (its reader too): it is handed to a
session, which gives it back (`release`) when its link ends; the task then drops it if the
session has not closed it. An unused one is replaced after ``max_idle_s`` (providers drop
idle sockets: ElevenLabs after 20 s). The pool never blocks a session: empty, it is a miss."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from slng_fast.vocabulary import UpstreamRequest

log = logging.getLogger("slng_fast.warm_pool")

MAX_IDLE_S = 10.0
OPEN_TIMEOUT_S = 10.0
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class _Warm:
    conn: Any
    request: UpstreamRequest
    handed: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)


class WarmPool:
    def __init__(self, sizes: dict[str, int], request_for: Callable[[str], UpstreamRequest],
                 open_upstream: Callable[..., Awaitable[Any]], *,
                 max_idle_s: float = MAX_IDLE_S) -> None:
        self.sizes = {name: n for name, n in sizes.items() if n > 0}
        self.request_for = request_for
        self.open_upstream = open_upstream
        self.max_idle_s = max_idle_s
        self._ready: dict[str, list[_Warm]] = {name: [] for name in self.sizes}
        self._wanted: dict[str, trio.Event] = {name: trio.Event() for name in self.sizes}
        self.hits = 0
        self.misses = 0

    def take(self, name: str, request: UpstreamRequest) -> tuple[Any, Callable[[], None]] | None:
        """A ready connection for ``request`` to ``name`` and the call that gives it back
        when the session is done with it; None when there is none (a miss)."""
        ready = self._ready.get(name)
        if ready is None:
            return None
        for i, warm in enumerate(ready):
            if warm.request == request:
                del ready[i]
                warm.handed.set()
                self._wanted[name].set()
                self.hits += 1
                return warm.conn, warm.released.set
        self.misses += 1
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for name, size in self.sizes.items():
                nursery.start_soon(self._fill, name, size, nursery)
            task_status.started()

    async def _fill(self, name: str, size: int, nursery: trio.Nursery) -> None:
        failures = 0
        while True:
            self._wanted[name] = trio.Event()
            while len(self._ready[name]) < size:
                try:
                    request = self.request_for(name)
                    await nursery.start(self._hold, name, request)
                    failures = 0
                except Exception as exc:  # unreachable now: try again later, quietly
                    delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                    failures += 1
                    log.info("warm connection to %s failed (%s); again in %.1f s", name, exc,
                             delay)
                    await trio.sleep(delay)
            await self._wanted[name].wait()

    async def _hold(self, name: str, request: UpstreamRequest,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open one connection, offer it, and own it (and its reader) until it is dropped
        idle or its session gives it back. Once offered, nothing it raises leaves here."""
        offered = False
        try:
            async with trio.open_nursery() as nursery:
                conn = await self.open_upstream(request.url, list(request.headers),
                                                list(request.subprotocols), nursery,
                                                connect_timeout=OPEN_TIMEOUT_S)
                warm = _Warm(conn, request)
                self._ready[name].append(warm)
                offered = True
                task_status.started()
                await self._own(name, warm)
                nursery.cancel_scope.cancel()
        except Exception:
            if not offered:
                raise
            log.exception("warm connection to %s", name)

    async def _own(self, name: str, warm: _Warm) -> None:
        with trio.move_on_after(self.max_idle_s):
            await warm.handed.wait()
        if not warm.handed.is_set():  # idle too long: replaced by a fresh one
            self._ready[name].remove(warm)
            self._wanted[name].set()
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                try:
                    await warm.conn.close(1000, "")
                except Exception:
                    pass
            return
        await warm.released.wait()
        with trio.CancelScope(shield=True):
            try:
                await warm.conn.abort()  # a no-op once the session closed it
            except Exception:
                pass
