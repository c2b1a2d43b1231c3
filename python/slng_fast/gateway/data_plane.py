"""The worker's data plane as trio sees it: one task waits on the native plane's epoll
descriptor (rust/src/plane.rs) and, in one call, serves every lent stream that has
input, in either direction (a TTS `Relay`: upstream in, client out; an STT `Uplink`:
client in, upstream out). A stream's own reader task sleeps while its stream is lent, and wakes only when
the plane hands the stream back (a message it does not own, a client that did not take
every byte, an end, an error) or the control plane takes it back (`take_back`).

In the steady state the task only counts: each stream's report goes to the session
(`Relay.report`, `Uplink.report`) and a relay's write time to its metric
(`Relay.written`), both synchronous,
so no reader task runs per frame. docs/decisions.md, "The data plane boundary"."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from slng_fast import _native

if TYPE_CHECKING:
    from collections.abc import Callable

    from slng_fast.gateway.transport import Relay, Uplink

log = logging.getLogger(__name__)

# The native plane (Linux only); without it every stream stays on its reader task.
_NativePlane: Any = getattr(_native, "DataPlane", None)

# From this many lent streams on (about 6 frames a millisecond at 25 frames a second
# each), the plane waits WINDOW after each call before serving again, so that one
# wake-up serves every stream whose input arrived meanwhile: fewer, fuller calls for at
# most WINDOW of added latency. Below it, each input is served as soon as it arrives.
COALESCE_FROM = 256
WINDOW = 0.001

# (handed_back, unwritten, sink_error, ended, error): see `_native.DataPlane.serve`.
Outcome = tuple[bool, bytes, str | None, str | None, BaseException | None]


class Lent:
    """One stream on the plane, as its reader task waits for it to come back."""

    __slots__ = ("key", "on_report", "on_written", "ends", "back", "report", "seconds",
                 "outcome")

    def __init__(self, key: int, on_report: Callable[[_native.RelayReport], None],
                 on_written: Callable[[float], None] | None) -> None:
        self.key = key
        self.on_report = on_report  # the session's count of what went through
        self.on_written = on_written  # the added-latency metric (relays only)
        self.ends: tuple[Any, Any] = (None, None)  # the source and sink connections
        self.back = trio.Event()
        # Set when the plane handed the stream back; None when the control plane
        # took it (nothing read is waiting).
        self.report: _native.RelayReport | None = None
        self.seconds: float | None = None
        self.outcome: Outcome | None = None


class DataPlane:
    def __init__(self) -> None:
        self._native = _NativePlane()
        self._lent: dict[int, Lent] = {}

    def __len__(self) -> int:
        return len(self._lent)

    def lend(self, source_fd: int, source: _native.WsConnection, sink_fd: int,
             sink: _native.WsConnection, stream: Relay | Uplink,
             written: Callable[[float], None] | None = None) -> Lent:
        """Lend ``stream`` (its ``state`` carries it, its ``report`` counts it); a
        relay's ``written`` times its frames."""
        key = self._native.lend(source_fd, source, stream.state, sink_fd, sink)
        lent = self._lent[key] = Lent(key, stream.report, written)
        return lent

    def take_back(self, lent: Lent) -> None:
        """Take the stream back now (before its sockets change hands or close)."""
        if self._lent.pop(lent.key, None) is not None:
            self._native.take_back(lent.key)
            lent.back.set()

    async def serve(self) -> None:
        fd = self._native.fileno()
        serve = self._native.serve
        lent_streams = self._lent
        while True:
            await trio.lowlevel.wait_readable(fd)
            served = serve()
            while served:
                self._dispatch(served)
                if len(lent_streams) < COALESCE_FROM:
                    break
                # Under load, let the other streams' input arrive: one wake-up then
                # serves all of them (at most WINDOW of added latency).
                await trio.sleep(WINDOW)
                served = serve()

    def _dispatch(self, served: list[tuple[int, _native.RelayReport, float | None,
                                           Outcome | None]]) -> None:
        """Count the steady streams; wake the reader of each stream handed back. (A
        function of its own so that no stream outlives it in a waiting frame's locals.)"""
        lent_streams = self._lent
        for key, report, seconds, outcome in served:
            lent = lent_streams.get(key)
            if lent is None:
                continue
            if outcome is None:
                try:
                    lent.on_report(report)
                    if seconds is not None and lent.on_written is not None:
                        lent.on_written(seconds)
                except Exception as exc:  # the reader raises it, as it would have
                    lent.report, lent.outcome = report, (False, b"", None, None, exc)
                    self.take_back(lent)
                continue
            del lent_streams[key]
            lent.report, lent.seconds, lent.outcome = report, seconds, outcome
            lent.back.set()


_PLANE: trio.lowlevel.RunVar[DataPlane | None] = trio.lowlevel.RunVar("slng_fast_data_plane")


def current_plane() -> DataPlane | None:
    """This trio run's plane, started on first use; None where there is none."""
    try:
        return _PLANE.get()
    except LookupError:
        pass
    plane = None
    if _NativePlane is not None:
        plane = DataPlane()
        trio.lowlevel.spawn_system_task(plane.serve, name="slng_fast data plane")
    _PLANE.set(plane)
    return plane
