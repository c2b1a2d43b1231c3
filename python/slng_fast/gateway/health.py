"""Providers a worker holds down (issue 13 point 5), the I/O half of
`protocol.fallback.ProviderHealth`: a provider that failed a session is skipped by new
sessions until a probe (a WebSocket handshake to it, closed at once) answers, tried after
a backoff. With Redis, a failure is published (``<prefix>down:<name>``, expiring after
the backoff) and every worker reads the others' marks once a second."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from slng_fast.protocol.fallback import ProviderHealth

log = logging.getLogger("slng_fast.health")

PROBE_TIMEOUT_S = 5.0
SHARED_POLL_S = 1.0
# Opens a provider's upstream for a probe: (url, headers, subprotocols) or None when
# the provider cannot be reached at all (no URL configured).
Target = Callable[[str], Any]


class HealthWatch:
    def __init__(self, target: Target,
                 open_upstream: Callable[..., Awaitable[Any]], *,
                 redis: Any = None, prefix: str = "slng:", names: tuple[str, ...] = ()) -> None:
        self.health = ProviderHealth()
        self.target = target  # name -> UpstreamRequest (or None)
        self.open_upstream = open_upstream
        self.redis = redis
        self.prefix = prefix
        self.names = names  # what to read from Redis
        self._wake = trio.Event()
        self._published: list[tuple[str, float]] = []
        self.probes = 0
        self.failures: dict[str, int] = {}  # sessions' failures by provider (tests, logs)

    def is_down(self, name: str, now: float) -> bool:
        return self.health.is_down(name, now)

    def failed(self, name: str, reason: str) -> None:
        """A session saw ``name`` fail: down in this worker (and, with Redis, in all)."""
        delay = self.health.failed(name, trio.current_time())
        self.failures[name] = self.failures.get(name, 0) + 1
        log.warning("provider %s marked down (%s); probing in %.0f s", name, reason, delay)
        self._publish(name, delay)
        self._wake.set()

    def _publish(self, name: str, delay: float) -> None:
        if self.redis is not None:
            self._published.append((name, delay))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe_loop)
            if self.redis is not None:
                nursery.start_soon(self._share_loop)
            task_status.started()

    async def _probe_loop(self) -> None:
        while True:
            now = trio.current_time()
            for name in self.health.due(now):
                await self._probe(name)
            times = [t for t in (self.health.probe_at(n) for n in self.health.down())
                     if t is not None]
            with trio.move_on_at(min(times) if times else float("inf")):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _probe(self, name: str) -> None:
        self.probes += 1
        try:
            request = self.target(name)
            async with trio.open_nursery() as nursery:
                conn = await self.open_upstream(request.url, list(request.headers),
                                                list(request.subprotocols), nursery,
                                                connect_timeout=PROBE_TIMEOUT_S)
                with trio.move_on_after(1.0):
                    await conn.close(1000, "")
                nursery.cancel_scope.cancel()
        except Exception as exc:  # every way a probe can fail is "still down"
            delay = self.health.probe_failed(name, trio.current_time())
            self._publish(name, delay)
            log.info("provider %s still down (%s); next probe in %.0f s", name, exc, delay)
            return
        self.health.probe_answered(name)
        log.warning("provider %s answers again", name)
        if self.redis is not None:
            try:
                await self.redis.execute("DEL", self._key(name))
            except OSError:
                pass

    def _key(self, name: str) -> str:
        return f"{self.prefix}down:{name}"

    async def _share_loop(self) -> None:
        while True:
            try:
                while self._published:
                    name, delay = self._published.pop(0)
                    await self.redis.execute("SET", self._key(name), "1", "PX",
                                             max(1, int(delay * 1000)))
                if self.names:
                    replies = await self.redis.pipeline(
                        [("PTTL", self._key(n)) for n in self.names])
                    now = trio.current_time()
                    self.health.shared = {n: now + int(ms) / 1000 for n, ms in
                                          zip(self.names, replies)
                                          if isinstance(ms, int) and ms > 0}
            except OSError as exc:
                log.info("provider health: Redis unavailable (%s)", exc)
            await trio.sleep(SHARED_POLL_S)
