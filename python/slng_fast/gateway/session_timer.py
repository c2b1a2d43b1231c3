"""A session's own deadline: the clock for a sans-I/O session that asks for one.

``session.deadline()`` says when (or None) and ``session.on_deadline(now)`` is what to call
then (a WhisperLive finalize that only time can settle, a provider that went quiet). When
it passes, the timer calls ``fire()``: the bridge then runs the session's step in its
loop, ahead of its inbox (a deadline never waits in a queue). The loop calls ``check()``
after each step, which re-arms the timer only when the step moved the deadline (no work
per audio frame). The timer is shared with the bridge's own clock (idle timeout, maximum
duration, heartbeat: the ``also`` of `SessionTimer.start`).

No timer has a task of its own: every timer of the worker waits in one heap served by one
task (`Deadlines`), so a session costs no task, no cancel scope and no wake-up for its
clocks (a task and its frames are about 2-3 KB, and ending one is a share of a session's
teardown). A deadline that moves later is not re-pushed: its earlier entry fires, finds
nothing due, and arms the new time then (an idle timeout pushed on by every client
message costs one heap entry per timeout period, not one per message)."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

# Entries of stopped or re-armed timers wait in the heap until their time; past this
# many (and half the heap), the heap is rebuilt without them.
COMPACT_FROM = 256


class Deadlines:
    """The worker's timers, in one heap, served by one task (`current_deadlines`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, SessionTimer]] = []
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None
        self._stale = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, timer: SessionTimer, at: float) -> None:
        heapq.heappush(self._heap, (at, next(self._order), timer))
        sleep = self._sleep
        if sleep is not None and at < sleep.deadline:
            sleep.deadline = at  # trio's own deadline heap wakes the task then

    def forget(self) -> None:
        """One entry in the heap no longer counts (its timer stopped or moved earlier)."""
        self._stale += 1
        if self._stale >= COMPACT_FROM and self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2]._at == entry[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    async def serve(self) -> None:
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                at, _, timer = heapq.heappop(self._heap)
                if timer._at != at:
                    self._stale = max(0, self._stale - 1)
                    continue
                timer._at = None
                try:
                    timer._due(now)
                except Exception:  # one session's fault must not stop every clock
                    log.exception("a session timer failed; it is stopped")
                    timer.stop()
            heap = self._heap
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None


_DEADLINES: trio.lowlevel.RunVar[Deadlines] = trio.lowlevel.RunVar("slng_fast_deadlines")


def current_deadlines() -> Deadlines:
    """This trio run's timers, their task started on first use."""
    try:
        return _DEADLINES.get()
    except LookupError:
        pass
    deadlines = Deadlines()
    trio.lowlevel.spawn_system_task(deadlines.serve, name="slng_fast session timers")
    _DEADLINES.set(deadlines)
    return deadlines


class SessionTimer:
    __slots__ = ("session", "armed", "_fired", "_fire", "_also", "_other", "_ask", "_at",
                 "_deadlines")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.armed: float | None = None  # the session's deadline being watched
        self._fired = False  # fired for ``armed``: not again until the deadline moves
        self._fire: Callable[[], None] | None = None
        self._also: Callable[[float], float | None] | None = None
        self._other = math.inf  # when to ask ``also`` next
        self._ask = False  # `wake()`: ask ``also`` at once
        self._at: float | None = None  # this timer's live entry in the heap
        self._deadlines: Deadlines | None = None

    def start(self, fire: Callable[[], None],
              also: Callable[[float], float | None] | None = None) -> None:
        """``fire()`` when the session's deadline passes. ``also``: another clock on this
        timer (the bridge's idle timeout, maximum duration and heartbeat). Called now and
        whenever its last answer has passed (or soon after `wake()`), it answers when to
        call it next, or None: the timer stops."""
        self._deadlines = current_deadlines()
        self._fire, self._also = fire, also
        if also is not None:
            first = also(trio.current_time())
            if first is None:
                self.stop()
                return
            self._other = first
        self.armed = self.session.deadline()
        self._arm()

    def stop(self) -> None:
        """Nothing more is called (the session's bridge is ending). What the heap may
        still hold is this small object, not the session or its bridge."""
        self._fire = self._also = self.session = None
        if self._at is not None and self._deadlines is not None:
            self._at = None
            self._deadlines.forget()

    def check(self) -> None:
        """After a session step: re-arm if the step moved the deadline."""
        if self._fire is None:
            return
        deadline = self.session.deadline()
        if deadline != self.armed:
            self.armed, self._fired = deadline, False
            self._arm()

    def wake(self) -> None:
        """The other clock has a new time: ask it again now (from the timers' task)."""
        if self._fire is None:
            return
        self._ask = True
        self._arm(trio.current_time())

    def _arm(self, at: float | None = None) -> None:
        if at is None:
            mine = math.inf if self._fired or self.armed is None else self.armed
            at = min(mine, self._other)
        if not math.isfinite(at):
            return
        current = self._at
        if current is not None:
            if current <= at:
                return  # the earlier entry fires first and arms this time then
            assert self._deadlines is not None
            self._deadlines.forget()
        self._at = at
        assert self._deadlines is not None
        self._deadlines.push(self, at)

    def _due(self, now: float) -> None:
        also, fire = self._also, self._fire
        if fire is None:
            return
        ask, self._ask = self._ask, False
        if also is not None and (now >= self._other or ask):
            later = also(now)
            if later is None:
                self.stop()
                return
            self._other = later
        if not self._fired and self.armed is not None and now >= self.armed:
            self._fired = True  # then wait until the loop's step has moved it
            fire()
        if self._fire is not None:
            self._arm()
