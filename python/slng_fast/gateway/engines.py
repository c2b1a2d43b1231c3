"""Starts each built-in engine as its own process (``python -m slng_fast.engines NAME``),
learns its port from the ``READY <port>`` line it prints, restarts it if it dies, and
stops it with the gateway. Being separate processes keeps the GPL eSpeak NG library out
of the gateway and lets PocketSphinx hold its own GIL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio_websocket

log = logging.getLogger("slng_fast.engines")

READY_TIMEOUT = 60.0
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)


@dataclass
class EngineSupervisor:
    names: tuple[str, ...]
    host: str = "127.0.0.1"
    urls: dict[str, str] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every engine, report started once all are ready, supervise forever."""
        async with trio.open_nursery() as nursery:
            for name in self.names:
                await nursery.start(self._supervise, name)
            task_status.started()

    async def _supervise(self, name: str, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        failures = 0
        first = True
        while True:
            try:
                await self._run_once(name, task_status if first else trio.TASK_STATUS_IGNORED)
                failures = 0
            except (OSError, RuntimeError) as exc:
                log.error("engine %s failed: %s", name, exc)
                if first:
                    raise
                failures += 1
            first = False
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.urls.pop(name, None)
            await trio.sleep(RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)])
            log.warning("restarting engine %s", name)

    async def _run_once(self, name: str, task_status: trio.TaskStatus[None]) -> None:
        command = [sys.executable, "-m", "slng_fast.engines", name, "--host", self.host,
                   "--port", "0", "--parent-pid", str(os.getpid())]
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(lambda task_status: trio.run_process(  # noqa: ASYNC105
                command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, check=False,
                task_status=task_status, deliver_cancel=_terminate))
            self.pids[name] = process.pid
            assert process.stdout is not None
            port = await _read_ready(process.stdout)
            url = f"ws://{self.host}:{port}/"
            self.info[name] = await _engine_info(name, url)
            self.urls[name] = url
            log.info("engine %s ready at %s (pid %d)", name, url, process.pid)
            task_status.started()
            nursery.start_soon(_drain, process.stdout)
            await process.wait()
            log.warning("engine %s exited with %s", name, process.returncode)


async def _terminate(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(3.0):
        await process.wait()
        return
    process.kill()


async def _read_ready(stream: trio.abc.ReceiveStream) -> int:
    buffer = b""
    with trio.fail_after(READY_TIMEOUT):
        while b"\n" not in buffer:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise RuntimeError("engine exited before it was ready")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
    parts = line.split()
    if len(parts) < 2 or parts[0] != "READY" or not parts[1].isdigit():
        raise RuntimeError(f"engine printed {line!r} instead of 'READY <port>'")
    return int(parts[1])


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(4096):
        pass


async def _engine_info(name: str, url: str) -> dict[str, Any]:
    """What the engine really offers, for `ready.capabilities`."""
    if name != "espeak":
        return {}
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url) as ws:
            first = await ws.get_message()
    info = orjson.loads(first)
    return info if isinstance(info, dict) else {}

