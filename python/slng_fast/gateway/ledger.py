"""The usage ledger's I/O for one gateway process: every store call runs in a worker
thread (SQLite waiting for a lock, or for the disk, never stalls the loop's sessions),
the open sessions' running totals are saved every ``lease_ttl_s / 3`` in one batched
write, and rows whose saves stopped for ``lease_ttl_s`` (their worker died, even by
``kill -9``) are closed as ``worker_lost``. A ``kill -9`` therefore loses at most one
interval of usage, and its rows are closed about one TTL later by any live worker.
With a store that ships its rows elsewhere (PostgreSQL), each interval also ships what
changed; a failed shipping is tried again at the next, the rows waiting on the host."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
import outcome
import trio

from slng_fast.gateway.bridge import OutsideEnd
from slng_fast.store import STORE_ERRORS, StoreBackend, UsageTotals

log = logging.getLogger("slng_fast.ledger")

T = TypeVar("T")

# Store calls in flight at once per process; more wait their turn (in the loop, not a thread).
STORE_THREADS = 8


class _Queued:
    """One store call waiting for the next batch (see `Ledger.batched`)."""

    __slots__ = ("call", "result", "done", "leads")

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.result: outcome.Outcome[Any] | None = None
        self.done = trio.Event()
        self.leads = False  # handed the batches on: this caller runs the next one


def _run_batch(batch: list[_Queued]) -> None:
    """In the worker thread: each call in turn, each with its own outcome."""
    for queued in batch:
        queued.result = outcome.capture(queued.call)


@dataclass
class OpenSession:
    """What the gateway knows of a running session outside its bridge."""

    session: Any  # TtsSession or SttSession: its running usage and context id
    key_id: str
    end: OutsideEnd = field(default_factory=OutsideEnd)

    def totals(self) -> UsageTotals:
        usage = self.session.usage
        served = getattr(self.session, "provider_usage", None)
        providers = orjson.dumps(served()).decode() if served is not None else ""
        return UsageTotals(self.session.session_id, self.session.context_id, usage.characters,
                           usage.audio_ms, usage.messages, providers)


@dataclass
class _Close:
    session_id: str
    fields: dict[str, Any]


class Ledger:
    """The store seen from the event loop, and the task that keeps open rows current."""

    def __init__(self, store: StoreBackend, worker_id: str, lease_ttl_s: float) -> None:
        self.store = store
        self.worker_id = worker_id
        self.lease_ttl_s = lease_ttl_s
        self.sessions: dict[str, OpenSession] = {}  # session id -> open session
        self._limiter = trio.CapacityLimiter(STORE_THREADS)
        self._unwritten: list[_Close] = []  # final closes that failed: retried each interval
        self._queued: list[_Queued] = []  # calls waiting for the batch in flight
        self._batching = False
        self.store_ok = True  # the last interval's steps all succeeded (for /healthz)

    @property
    def save_interval_s(self) -> float:
        return self.lease_ttl_s / 3

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a Store method) in a worker thread. Not abandoned on
        cancellation: a write that started finishes."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs),
                                             limiter=self._limiter)

    async def batched(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call`, but calls made while one batch runs go to the worker thread together,
        in one hand-off, when it ends (group commit): a session's start and end each
        write a row, and at a thousand sessions a second one thread hand-off each meant
        a thread holding the GIL for every write while the loop waited for it (measured:
        the end of 1,000 streams in one second late by 50 ms). Each call gets its own
        result or exception; a call that started finishes, even if its caller is
        cancelled."""
        queued = _Queued(partial(fn, *args, **kwargs))
        self._queued.append(queued)
        if self._batching:
            with trio.CancelScope(shield=True):
                await queued.done.wait()
            if not queued.leads:
                assert queued.result is not None
                return queued.result.unwrap()  # type: ignore[no-any-return]
            queued.done = trio.Event()  # woken to lead: still waiting for its own batch
        self._batching = True
        try:
            while not queued.done.is_set():
                batch, self._queued = self._queued, []
                try:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(_run_batch, batch,
                                                      limiter=self._limiter)
                finally:
                    for each in batch:
                        if each.result is None:
                            each.result = outcome.Error(RuntimeError("the batch did not run"))
                        each.done.set()
        finally:
            self._batching = False
            if self._queued:  # the next caller runs the next batch
                self._batching = True
                self._queued[0].leads = True
                self._queued[0].done.set()
        assert queued.result is not None
        return queued.result.unwrap()  # type: ignore[no-any-return]

    async def open(self, session: Any, key_id: str, provider: str, started_at: float, *,
                   kind: str = "", upstream: str = "") -> OpenSession:
        """Write the session's row (raises one of ``STORE_ERRORS``) and count it as open."""
        await self.batched(self.store.open_session, session.session_id, key_id,
                        session.context_id, provider, started_at, self.worker_id,
                        kind=kind, upstream=upstream)
        opened = OpenSession(session, key_id)
        self.sessions[session.session_id] = opened
        return opened

    async def close(self, opened: OpenSession, reason: str) -> None:
        """Write the final totals. Never raises: a failed write is kept and retried
        with the next save (the row meanwhile keeps its last saved totals)."""
        self.sessions.pop(opened.session.session_id, None)
        totals = opened.totals()
        close = _Close(totals.session_id, {
            "context_id": totals.context_id, "characters": totals.characters,
            "audio_ms": totals.audio_ms, "messages": totals.messages,
            "ended_at": time.time(), "reason": reason, "providers": totals.providers})
        with trio.CancelScope(shield=True):
            try:
                await self.batched(self.store.close_session, close.session_id,
                                   **close.fields)
            except STORE_ERRORS as exc:
                log.error("could not write the end of a session (%s); retrying", exc,
                          extra={"context_id": totals.context_id})
                self._unwritten.append(close)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every interval: save the open sessions' totals, write the closes that failed,
        and close the rows of workers that are gone. A step that fails is logged and
        tried again at the next interval; it does not hold up the others."""
        task_status.started()
        while True:
            await trio.sleep(self.save_interval_s)
            ok = True
            for step in (self.save, self.write_unwritten, self.close_lost, self.ship):
                try:
                    await step()
                except STORE_ERRORS as exc:
                    ok = False
                    log.error("ledger: %s failed (%s); trying again in %.1f s",
                              step.__name__, exc, self.save_interval_s)
            self.store_ok = ok

    async def save(self) -> None:
        totals = [opened.totals() for opened in self.sessions.values()]
        await self.call(self.store.save_usage, totals, time.time())

    async def write_unwritten(self) -> None:
        while self._unwritten:
            close = self._unwritten[0]
            await self.call(self.store.close_session, close.session_id, **close.fields)
            self._unwritten.pop(0)

    async def ship(self) -> None:
        await self.call(self.store.ship_usage, self.lease_ttl_s)

    async def close_lost(self) -> None:
        lost = await self.call(self.store.close_lost, time.time() - self.lease_ttl_s)
        if lost:
            log.warning("closed %d usage rows of a gateway worker that is gone", lost)
