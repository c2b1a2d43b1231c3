"""A session's own deadline: the clock for a sans-I/O session that asks for one.

``session.deadline()`` says when (or None) and ``session.on_deadline(now)`` is what to call
then (a WhisperLive finalize that only time can settle, a provider that went quiet). One
task per session (shared with the bridge's idle, maximum-duration and heartbeat clock) sleeps until the deadline and calls ``fire()``: the bridge then runs the
session's step in its loop, ahead of its inbox (a deadline never waits in a queue). The
loop calls ``check()`` after each step, which re-arms the task only when the step moved
the deadline (no wake-up per audio frame)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import trio


class SessionTimer:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.armed: float | None = None  # the deadline the task sleeps until
        self._moved = trio.Event()
        self._ask = False  # `wake()`: ask the other clock again now
        self._sleep: trio.CancelScope | None = None

    def check(self) -> None:
        """After a session step: wake the task if the step moved the deadline."""
        if self.session.deadline() != self.armed:
            self._moved.set()

    def wake(self) -> None:
        """The other clock (``run``'s ``also``) has a new time: ask it again now."""
        self._ask = True
        if self._sleep is not None:
            self._sleep.cancel()

    async def run(self, fire: Callable[[], None],
                  also: Callable[[float], float | None] | None = None) -> None:
        """``also``: another clock sharing this task (the bridge's idle timeout, maximum
        duration and heartbeat: fewer tasks per connection). Called with the time when its
        last answer has passed (or at once after `wake()`), it answers when to call it
        next, or None: this task ends."""
        other = math.inf
        if also is not None:
            first = also(trio.current_time())
            if first is None:
                return
            other = first
        while True:
            moved = self._moved = trio.Event()
            self.armed = self.session.deadline()
            fired = False
            while not moved.is_set():
                mine = math.inf if fired or self.armed is None else self.armed
                with trio.move_on_at(min(mine, other)) as self._sleep:
                    if not self._ask:
                        await moved.wait()
                self._sleep = None
                now = trio.current_time()
                ask, self._ask = self._ask, False
                if also is not None and (now >= other or ask):
                    later = also(now)
                    if later is None:
                        return
                    other = later
                if not moved.is_set() and not fired and self.armed is not None \
                        and now >= self.armed:
                    fire()
                    fired = True  # then wait until the loop's step has moved it
