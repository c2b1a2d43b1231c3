"""The byte-bounded queue a connection's messages wait in: bounded by items and bytes,
never refusing one item into an empty queue, in order, closable from either side."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from slng_fast.gateway.queues import WOKEN, ByteBoundedQueue


async def test_bounded_by_bytes_as_well_as_items():
    queue = ByteBoundedQueue[bytes](max_items=100, max_bytes=1000)
    queue.put_nowait(b"x" * 600)
    queue.put_nowait(b"x" * 600)  # under the limit when put: admitted
    assert queue.nbytes == 1200
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait(b"x")
    assert queue.get_nowait() == b"x" * 600
    queue.put_nowait(b"y" * 500)  # 600 waiting, under 1000: room again
    assert queue.nbytes == 1100
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait(b"z")


async def test_bounded_by_items():
    queue = ByteBoundedQueue[bytes](max_items=2, max_bytes=1 << 20)
    queue.put_nowait(b"a")
    queue.put_nowait(b"b")
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait(b"c")


async def test_an_item_put_past_the_bounds_is_queued_in_order():
    queue = ByteBoundedQueue[bytes](max_items=2, max_bytes=1 << 20)
    queue.put_nowait(b"a")
    queue.put_nowait(b"b")
    queue.put_nowait(b"c", past_bounds=True)
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait(b"d")
    assert [queue.get_nowait() for _ in range(3)] == [b"a", b"b", b"c"]
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.put_nowait(b"e", past_bounds=True)


async def test_one_item_always_fits_into_an_empty_queue():
    queue = ByteBoundedQueue[bytes](max_items=4, max_bytes=10)
    queue.put_nowait(b"x" * 1000)
    assert queue.get_nowait() == b"x" * 1000


async def test_a_waiting_producer_goes_on_when_room_is_made_in_order(autojump_clock):
    queue = ByteBoundedQueue[bytes](max_items=1, max_bytes=1 << 20)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def produce() -> None:
            for n in range(5):
                await queue.put(bytes([n]))
            queue.close()

        nursery.start_soon(produce)
        while True:
            await trio.sleep(1)
            try:
                got.append(await queue.get())
            except trio.EndOfChannel:
                break
    assert got == [bytes([n]) for n in range(5)]


async def test_close_fails_producers_and_drains_for_the_consumer():
    queue = ByteBoundedQueue[bytes](max_items=1, max_bytes=100)
    queue.put_nowait(b"a")
    async with trio.open_nursery() as nursery:
        failed = trio.Event()

        async def blocked_producer() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await queue.put(b"b")
            failed.set()

        nursery.start_soon(blocked_producer)
        await trio.testing.wait_all_tasks_blocked()
        queue.close()
        await failed.wait()
    assert await queue.get() == b"a"
    with pytest.raises(trio.EndOfChannel):
        await queue.get()


async def test_a_cancelled_put_queues_nothing():
    queue = ByteBoundedQueue[bytes](max_items=1, max_bytes=100)
    queue.put_nowait(b"a")
    with trio.move_on_after(0.01):
        await queue.put(b"b")
    assert len(queue) == 1 and queue.get_nowait() == b"a"


async def test_an_item_being_handed_to_the_consumer_still_waits(nursery):
    """``get`` yields once after taking an item: until it returns, the item counts in
    ``waiting`` (the STT uplink starts only when nothing of the client's waits)."""
    queue = ByteBoundedQueue[bytes](max_items=4, max_bytes=1 << 20)
    seen: list[int] = []
    got: list[bytes] = []

    async def consumer() -> None:
        got.append(await queue.get())

    async def watcher() -> None:
        while not got:
            seen.append(queue.waiting)
            await trio.lowlevel.checkpoint()

    nursery.start_soon(consumer)
    await trio.testing.wait_all_tasks_blocked()
    queue.put_nowait(b"a")
    assert queue.waiting == 1
    nursery.start_soon(watcher)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [b"a"] and queue.waiting == 0
    assert seen and all(n == 1 for n in seen)  # never 0 while it was in flight


async def test_an_emptied_queue_holds_no_block():
    """A live stream's queues wait empty most of their life (its steady state is on the
    data plane): an emptied queue lets its deque go, and is used again as before."""
    from slng_fast.gateway.queues import _EMPTY

    queue = ByteBoundedQueue[bytes](max_items=4, max_bytes=100)
    assert queue._items is _EMPTY
    for round_ in range(3):
        queue.put_nowait(b"a")
        queue.put_nowait(b"b")
        assert queue._items is not _EMPTY
        assert [queue.get_nowait(), queue.get_nowait()] == [b"a", b"b"]
        assert queue._items is _EMPTY and queue.nbytes == 0, round_


async def test_a_wake_up_ends_a_wait_without_an_item(nursery):
    """`wake_getter` makes the consumer's `get_or_woken` return WOKEN, whether it waits
    then or calls later, once per wake-up; items come before nothing is left, and a
    plain `get` is not woken (the bridge's loop waits this way, with no cancel scope)."""
    queue = ByteBoundedQueue[bytes](max_items=4, max_bytes=1000)
    got: list[object] = []

    async def consume() -> None:
        got.append(await queue.get_or_woken())

    nursery.start_soon(consume)
    await trio.testing.wait_all_tasks_blocked()
    queue.wake_getter()
    await trio.testing.wait_all_tasks_blocked()
    assert got == [WOKEN]
    queue.wake_getter()  # nobody waits: the next call returns at once
    assert await queue.get_or_woken() is WOKEN
    queue.put_nowait(b"a")
    assert await queue.get_or_woken() == b"a"  # the wake-up was taken: not woken again
    queue.wake_getter()
    queue.put_nowait(b"b")
    assert await queue.get() == b"b"  # a plain get takes the item
    assert await queue.get_or_woken() is WOKEN  # the wake-up is still there
