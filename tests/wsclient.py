"""Client-side helpers for the gateway tests: open a socket, read events, read the close code."""

from __future__ import annotations

import orjson
import trio_websocket


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


async def connect(url: str, key: str | None, **kw) -> trio_websocket.WebSocketConnection:
    """Open a client socket (the caller closes it); kw go to connect_websocket_url."""
    headers = auth(key) if key else []
    return await trio_websocket.connect_websocket_url(
        kw.pop("nursery"), url, None, extra_headers=headers, **kw)


async def recv(ws) -> dict:
    return orjson.loads(await ws.get_message())


async def recv_until(ws, kind: str, limit: int = 10_000) -> list[dict]:
    """Events up to and including the first of `kind`."""
    out = []
    for _ in range(limit):
        event = await recv(ws)
        out.append(event)
        if event["type"] == kind:
            return out
    raise AssertionError(f"no {kind} event")


async def closed_code(ws) -> int:
    """Read until the gateway closes; the close code."""
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        return exc.reason.code
    raise AssertionError("unreachable")


async def send(ws, **fields) -> None:
    await ws.send_message(orjson.dumps(fields).decode())
