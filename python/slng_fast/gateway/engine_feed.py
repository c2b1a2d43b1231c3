"""How worker processes learn where the built-in engines are now. The parent writes the
supervisor's state (``{"urls": ..., "info": ...}``, one JSON line) to each worker's
stdin when the worker starts and whenever an engine is ready again or gone; the worker
applies every line to its registry's dicts in place, so the next session uses it. A
pipe rather than a file in the data directory: it belongs to one gateway, needs no
polling, and ends when the parent does."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import trio

from slng_fast.engines.supervisor import EngineSupervisor

log = logging.getLogger("slng_fast.gateway")

MAX_LINE = 1 << 20  # a state line is a few KB; more means the pipe is not ours


async def feed_engines(supervisor: EngineSupervisor, stream: trio.abc.SendStream) -> None:
    """Write the engines' state to ``stream`` now and after every change, until the
    reader goes away."""
    seen = -1
    try:
        while True:
            version = supervisor.version
            if version != seen:
                await stream.send_all(orjson.dumps(supervisor.snapshot()) + b"\n")
                seen = version
            await supervisor.wait_changed(seen)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # the worker has exited; its keeper starts another


async def follow_engines(stream: trio.abc.ReceiveStream, urls: dict[str, str],
                         info: dict[str, dict[str, Any]]) -> None:
    """Apply each state line read from ``stream`` to ``urls`` and ``info``, until the
    stream ends (the parent is gone)."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            apply_state(line, urls, info)
        if len(buffer) > MAX_LINE:
            log.error("engine state line too long; ignoring it")
            buffer = b""


def apply_state(line: bytes, urls: dict[str, str], info: dict[str, dict[str, Any]]) -> None:
    """One state line into the live dicts (changed in place: the registry holds them)."""
    try:
        state = orjson.loads(line)
        new_urls, new_info = dict(state["urls"]), dict(state["info"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.error("ignoring an engine state line that is not one: %s", exc)
        return
    _replace(urls, new_urls)
    _replace(info, new_info)
    log.info("engines now at %s", new_urls)


def _replace(target: dict[str, Any], new: dict[str, Any]) -> None:
    for name in [name for name in target if name not in new]:
        del target[name]
    target.update(new)
