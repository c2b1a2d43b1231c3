"""Starts each built-in engine as its own process (``python -m slng_fast.engines NAME``),
learns its port from the ``READY <port>`` line it prints, restarts it if it dies, and
stops it with the gateway. Being separate processes keeps the GPL eSpeak NG library out
of the gateway and lets PocketSphinx hold its own GIL.

A restarted engine asks for the port it had (the engine listens with SO_REUSEADDR), so
an URL handed out before stays good; if that port is taken it gets a new one. Either
way ``urls``/``info`` change in place and ``version`` moves on, so the worker
processes, which hold their own copies, can be told (``gateway/engine_feed.py``)."""

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
TTS_ENGINES = ("espeak", "piper")
"""The engines whose ``ready`` frame describes them (voices, rate) for the registry."""
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)


@dataclass
class EngineSupervisor:
    names: tuple[str, ...]
    host: str = "127.0.0.1"
    # Extra command-line arguments per engine (``--voice PATH`` for piper).
    args: dict[str, list[str]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # The port each engine last listened on, asked for again when it is restarted.
    ports: dict[str, int] = field(default_factory=dict)
    # Moves on whenever ``urls`` or ``info`` change (an engine is ready, or gone).
    version: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def snapshot(self) -> dict[str, Any]:
        """The engines' URLs and info now, as plain data."""
        return {"urls": dict(self.urls), "info": dict(self.info)}

    async def wait_changed(self, seen: int) -> int:
        """Wait until ``version`` differs from ``seen``; the new version."""
        while self.version == seen:
            await self._changed.wait()
        return self.version

    def _publish(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

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
            port = self.ports.get(name, 0)
            try:
                await self._run_once(name, port,
                                     task_status if first else trio.TASK_STATUS_IGNORED)
                failures = 0
            except Exception as exc:
                error = _engine_failure(exc)
                log.error("engine %s failed: %s", name, error or exc)
                if first or error is None:
                    raise
                if port and isinstance(error, EngineNotReady):  # its old port is taken?
                    log.warning("engine %s: taking a new port instead of %d", name, port)
                    self.ports.pop(name, None)
                    continue
                failures += 1
            first = False
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if self.urls.pop(name, None) is not None:
                self._publish()
            await trio.sleep(RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)])
            log.warning("restarting engine %s", name)

    async def _run_once(self, name: str, port: int, task_status: trio.TaskStatus[None]) -> None:
        command = [sys.executable, "-m", "slng_fast.engines", name, "--host", self.host,
                   "--port", str(port), "--parent-pid", str(os.getpid()),
                   *self.args.get(name, [])]
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
            self.ports[name] = port
            self._publish()
            log.info("engine %s ready at %s (pid %d)", name, url, process.pid)
            task_status.started()
            nursery.start_soon(_drain, process.stdout)
            await process.wait()
            log.warning("engine %s exited with %s", name, process.returncode)


class EngineNotReady(RuntimeError):
    """The engine process ended, or said something else, before ``READY <port>``."""


def _engine_failure(exc: BaseException) -> Exception | None:
    """The OSError, RuntimeError or time-out an engine's run failed with (trio's nursery
    wraps it in a group), or None for anything else."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, (OSError, RuntimeError, trio.TooSlowError)) else None


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
                raise EngineNotReady("engine exited before it was ready")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
    parts = line.split()
    if len(parts) < 2 or parts[0] != "READY" or not parts[1].isdigit():
        raise EngineNotReady(f"engine printed {line!r} instead of 'READY <port>'")
    return int(parts[1])


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(4096):
        pass


async def _engine_info(name: str, url: str) -> dict[str, Any]:
    """What the engine really offers, for `ready.capabilities`."""
    if name not in TTS_ENGINES:
        return {}
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url) as ws:
            first = await ws.get_message()
    info = orjson.loads(first)
    return info if isinstance(info, dict) else {}

