"""A FIFO bounded by bytes as well as by items, for the queues a connection's messages
wait in. trio's memory channels count items only, so a queue of 64 messages of a
tier's largest size could hold many megabytes; this one also stops its producers once
``max_bytes`` are waiting (one item is always admitted into an empty queue, however
large: the frame layer has already refused anything over the tier's size)."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")

# The items of every queue while it is empty, and its parking lots until someone waits:
# an idle connection's queues, and a live stream's (its steady state is on the data
# plane), then cost no deque block (~770 B) and no lots (~250 B each), issue 12 point 3. maxlen=0: nothing is ever kept in it (put_nowait replaces it
# before appending).
_EMPTY: deque[Any] = deque(maxlen=0)


class Woken(enum.Enum):
    WOKEN = "woken"


WOKEN = Woken.WOKEN  # what `get_or_woken` returns when woken with no item


class ByteBoundedQueue(Generic[T]):
    """Many producers, one consumer. ``put`` waits while full; ``get`` waits while
    empty; after ``close()`` producers get ClosedResourceError and the consumer drains
    what is left, then gets EndOfChannel."""

    def __init__(self, max_items: int, max_bytes: int,
                 size: Callable[[T], int] = len) -> None:  # type: ignore[assignment]
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size = size
        self._items: deque[tuple[T, int]] = _EMPTY
        self._bytes = 0
        self._handing = 0
        self._closed = False
        self._not_full: trio.lowlevel.ParkingLot | None = None
        self._not_empty: trio.lowlevel.ParkingLot | None = None
        self._woken = False  # `wake_getter` was called: `get_or_woken` returns WOKEN

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes waiting now."""
        return self._bytes

    def _full(self) -> bool:
        return bool(self._items) and (len(self._items) >= self.max_items
                                      or self._bytes >= self.max_bytes)

    def put_nowait(self, item: T, *, past_bounds: bool = False) -> None:
        """``past_bounds``: queue it even when full (a small item that must not wait
        for the consumer, who may be waiting on its producer)."""
        if self._closed:
            raise trio.ClosedResourceError
        if self._full() and not past_bounds:
            raise trio.WouldBlock
        size = self._size(item)
        if self._items is _EMPTY:
            self._items = deque()
        self._items.append((item, size))
        self._bytes += size
        if self._not_empty is not None:
            self._not_empty.unpark()

    async def put(self, item: T) -> None:
        """Either the item is queued or this raises (Cancelled, ClosedResourceError)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.put_nowait(item)
            except trio.WouldBlock:
                if self._not_full is None:
                    self._not_full = trio.lowlevel.ParkingLot()
                await self._not_full.park()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return

    def get_nowait(self) -> T:
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        item, size = self._items.popleft()
        if not self._items:  # an emptied queue lets its block go (most wait empty)
            self._items = _EMPTY
        self._bytes -= size
        if self._not_full is not None:
            self._not_full.unpark_all()
        return item

    async def get(self) -> T:
        item = await self._get(wakeable=False)
        assert item is not WOKEN
        return item

    async def get_or_woken(self) -> T | Woken:
        """`get`, or WOKEN once `wake_getter` was called (while it waits, or before):
        a consumer that must also answer other calls waits without a cancel scope."""
        return await self._get(wakeable=True)

    def wake_getter(self) -> None:
        self._woken = True
        if self._not_empty is not None:
            self._not_empty.unpark()

    async def _get(self, *, wakeable: bool) -> T | Woken:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if wakeable and self._woken:
                self._woken = False
                return WOKEN
            try:
                item = self.get_nowait()
            except trio.WouldBlock:
                if self._not_empty is None:
                    self._not_empty = trio.lowlevel.ParkingLot()
                await self._not_empty.park()
                continue
            self._handing += 1  # taken, not yet in the consumer's hands: see `waiting`
            try:
                await trio.lowlevel.cancel_shielded_checkpoint()
            finally:
                self._handing -= 1
            return item

    @property
    def waiting(self) -> int:
        """Items queued, or taken by ``get`` and not yet returned to its caller (``get``
        yields once after taking one)."""
        return len(self._items) + self._handing

    def close(self) -> None:
        """No more items: waiting producers fail, the consumer drains then ends."""
        self._closed = True
        for lot in (self._not_full, self._not_empty):
            if lot is not None:
                lot.unpark_all()

    def clear(self) -> None:
        """Drop everything waiting (nobody will read it)."""
        self._items.clear()
        self._bytes = 0
        if self._not_full is not None:
            self._not_full.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed
