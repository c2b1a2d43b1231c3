"""gateway/event_hooks.py: a hook runs once its event is set, never after removal, and
at once for an event already set; the waiting task ends with its last hook."""

from __future__ import annotations

import trio
import trio.testing

from slng_fast.gateway import event_hooks
from slng_fast.gateway.event_hooks import when_set


async def test_hooks_run_in_order_once_set() -> None:
    event, calls = trio.Event(), []
    when_set(event, lambda: calls.append(1))
    remove = when_set(event, lambda: calls.append(2))
    when_set(event, lambda: calls.append(3))
    remove()
    await trio.testing.wait_all_tasks_blocked()
    assert calls == []
    event.set()
    await trio.testing.wait_all_tasks_blocked()
    assert calls == [1, 3]
    assert id(event) not in event_hooks._waiters


async def test_already_set_runs_at_once_and_removal_frees_the_waiter() -> None:
    done, calls = trio.Event(), []
    done.set()
    when_set(done, lambda: calls.append("now"))
    assert calls == ["now"]
    never = trio.Event()
    before = trio.lowlevel.current_statistics().tasks_living
    remove = when_set(never, lambda: calls.append("never"))
    assert trio.lowlevel.current_statistics().tasks_living == before + 1
    remove()
    remove()
    await trio.testing.wait_all_tasks_blocked()
    assert trio.lowlevel.current_statistics().tasks_living == before
    assert id(never) not in event_hooks._waiters
    never.set()
    await trio.testing.wait_all_tasks_blocked()
    assert calls == ["now"]
