"""A session driven by an HTTP request instead of a WebSocket client: this connection
stands in for the client. It hands the session a fixed script of unified commands
(``init``, ``input_text``, ``flush``; or ``start``, audio, ``finalize``) and passes
every unified event the session sends to the HTTP side, which turns them into a
response. The session, its bridge, limits, ledger row and metrics are those of a
WebSocket session; only the client's end of the pipe differs."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import trio

from slng_fast.gateway.transport import Connection, ConnectionClosed

EVENT_QUEUE = 16  # events the HTTP side has not written yet; then the session waits


class HttpSessionConnection(Connection):
    """The client's end of a session run for one HTTP request. ``events`` yields the
    session's unified events as dicts and ends when the session closes its client."""

    def __init__(self, script: Iterable[str | bytes]) -> None:
        self._script = deque(script)
        self._send, self.events = trio.open_memory_channel[dict[str, Any]](EVENT_QUEUE)
        self._done = trio.Event()
        self._gone = False
        self.on_closing: Callable[[], None] | None = None
        self.close_code: int | None = None

    def finish(self, *, gone: bool = False) -> None:
        """The HTTP side has its answer (or its client went away, ``gone``): the session
        sees its client close and ends as a WebSocket session would."""
        self._gone = self._gone or gone
        if not self._done.is_set():
            self._done.set()
            if self.on_closing is not None:
                self.on_closing()
            self.events.close()

    async def receive(self) -> str | bytes:
        if self._script and not self._done.is_set():
            return self._script.popleft()
        await self._done.wait()
        raise ConnectionClosed(1006 if self._gone else 1000, "the HTTP request ended")

    async def send(self, frame: str | bytes) -> None:
        await self.send_within(frame, math.inf)

    async def send_within(self, frame: str | bytes, timeout: float, *, text: bool = False) -> bool:
        if self._done.is_set():
            return True  # the answer is complete: the rest is nobody's
        event = orjson.loads(frame)
        with trio.move_on_after(timeout):
            try:
                await self._send.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return True
        return False

    async def ping(self) -> None:
        """An HTTP client has no pings; a dead one shows when its answer is written."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
        self._send.close()

    async def abort(self) -> None:
        await self.close(1006, "aborted")
