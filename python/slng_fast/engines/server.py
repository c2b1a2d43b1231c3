"""What the built-in engines' WebSocket servers share: the set of open connections
(closed 1001 on shutdown, 1011 on an unexpected error) and the serving loop. Each engine
runs in its own process (``python -m slng_fast.engines NAME``); the gateway never calls
these itself."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

log = logging.getLogger("slng_fast.engines")

SHUTDOWN_TIMEOUT = 2.0
"""Seconds a graceful shutdown waits for clients to answer the 1001 close."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _being_cancelled() -> bool:
    return trio.current_effective_deadline() == -math.inf


class Connections:
    """The open client sockets, so that a shutdown can say goodbye (1001)."""

    def __init__(self) -> None:
        self._open: set[WebSocketConnection] = set()

    async def run(self, ws: WebSocketConnection, session: Callable[[], Any], name: str) -> None:
        """Run one session; its errors end the session, never the server."""
        self._open.add(ws)
        try:
            await session()
        except BaseException as exc:
            leaves = _leaves(exc)
            if _being_cancelled() or not all(isinstance(e, Exception) for e in leaves):
                await close_quietly(ws, 1001, "engine shutting down")
                raise
            if all(isinstance(e, ConnectionClosed) for e in leaves):
                return  # the client went away
            # The leaves' names first: a log line cut short still says what failed.
            log.error("%s session failed (%s)", name,
                      ", ".join(f"{type(e).__name__}: {e}" for e in leaves), exc_info=exc)
            await close_quietly(ws, 1011, "internal error")
        finally:
            self._open.discard(ws)

    async def close_all(self, code: int, reason: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for ws in list(self._open):
                    nursery.start_soon(ws.aclose, code, reason)


async def close_quietly(ws: WebSocketConnection, code: int, reason: str) -> None:
    if ws.closed is not None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
        await ws.aclose(code, reason)


async def serve(
    handler: Callable[[WebSocketRequest], Any],
    connections: Connections,
    host: str,
    port: int,
    shutdown: trio.Event | None,
    task_status: trio.TaskStatus[int],
) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                host,
                port,
                None,
                disconnect_timeout=SHUTDOWN_TIMEOUT,
                connect_timeout=10,
            )
        )
        task_status.started(server.port)
        if shutdown is None:
            await trio.sleep_forever()
        else:
            await shutdown.wait()
            await connections.close_all(1001, "engine shutting down", SHUTDOWN_TIMEOUT)
            nursery.cancel_scope.cancel()
