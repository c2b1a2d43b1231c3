"""Call a function when a trio.Event is set, without a task per waiter.

Every session must hear of the worker's shutdown and drain, but a task per session per
event costs each idle connection a trio task, its coroutine frame and cancel status
(about 2.5 KiB each, issue 12 point 3). Here one system task per event with live hooks
waits for it and calls the hooks in the order they were added; it ends once the event
is set or its last hook is removed, so an event nobody sets holds nothing."""

from __future__ import annotations

from collections.abc import Callable

import trio


class _Waiter:
    __slots__ = ("hooks", "scope")

    def __init__(self) -> None:
        self.hooks: dict[int, Callable[[], None]] = {}
        self.scope = trio.CancelScope()


_waiters: dict[int, tuple[trio.Event, _Waiter]] = {}
_next_id = 0


async def _wait(event: trio.Event, waiter: _Waiter) -> None:
    try:
        with waiter.scope:
            await event.wait()
    finally:  # also when the run ends: nothing of it stays here
        if _waiters.get(id(event), (None, None))[1] is waiter:
            del _waiters[id(event)]
    if event.is_set():
        for hook in list(waiter.hooks.values()):
            hook()
    waiter.hooks.clear()


def when_set(event: trio.Event, hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook()`` (it must not raise) once ``event`` is set: at once if it is
    already. Returns the function that removes the hook (idempotent)."""
    global _next_id
    if event.is_set():
        hook()
        return lambda: None
    entry = _waiters.get(id(event))
    if entry is None or entry[0] is not event:
        entry = (event, _Waiter())
        _waiters[id(event)] = entry
        trio.lowlevel.spawn_system_task(_wait, event, entry[1], name="event_hooks")
    waiter = entry[1]
    _next_id += 1
    key = _next_id
    waiter.hooks[key] = hook

    def remove() -> None:
        if waiter.hooks.pop(key, None) is not None and not waiter.hooks:
            waiter.scope.cancel()
            if _waiters.get(id(event), (None, None))[1] is waiter:
                del _waiters[id(event)]

    return remove
