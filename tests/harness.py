"""Real parts for the tests that go over sockets: the built-in engines, a gateway on
127.0.0.1 port 0, and an emulator in front of an engine. Imported by the conftests."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from slng_fast.config import Config, ProviderConfig
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan
from slng_fast.engines.espeak_server import serve_espeak_engine
from slng_fast.engines.sphinx_server import serve_sphinx_engine
from slng_fast.engines.supervisor import _engine_info
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store

EMULATOR_KEY = "emulator-secret"


@dataclass
class Running:
    url: str
    gateway: Gateway
    store: Store
    keys: dict[str, str]  # tier -> secret
    key_ids: dict[str, str]

    def tts(self, provider: str = "espeak", query: str = "") -> str:
        return f"{self.url}/v1/tts/{provider}-websocket-stream{query}"

    def stt(self, model: str = "pocketsphinx", query: str = "") -> str:
        return f"{self.url}/v1/stt/{model}-websocket-stream{query}"


async def start_engines(nursery: trio.Nursery, *, sphinx: bool = True
                        ) -> tuple[dict[str, str], dict[str, Any]]:
    """The built-in engines' servers (``sphinx=False``: eSpeak only, a second quicker)."""
    espeak = await nursery.start(serve_espeak_engine, "127.0.0.1", 0)
    urls = {"espeak": f"ws://127.0.0.1:{espeak}/"}
    if sphinx:
        port = await nursery.start(serve_sphinx_engine, "127.0.0.1", 0)
        urls["pocketsphinx"] = f"ws://127.0.0.1:{port}/"
    info = {"espeak": await _engine_info("espeak", urls["espeak"])}
    return urls, info


async def start_engine_process(nursery: trio.Nursery, name: str, *extra: str) -> str:
    """``python -m slng_fast.engines NAME`` as its own process (terminated when the
    nursery is cancelled); its ws:// URL, once it printed ``READY <port>``."""
    command = [sys.executable, "-m", "slng_fast.engines", name, "--host", "127.0.0.1",
               "--port", "0", *extra]

    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        await trio.run_process(command, stdout=subprocess.PIPE, check=False,
                               task_status=task_status)

    process: trio.Process = await nursery.start(run)
    assert process.stdout is not None
    line = b""
    with trio.fail_after(60):  # a hang-guard: loading a model on a busy machine
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"engine {name} exited before it was ready"
            line += chunk
    word, port = line.decode().split()
    assert word == "READY"
    return f"ws://127.0.0.1:{port}/"


async def start_emulator(nursery: trio.Nursery, name: str, engine_urls: dict[str, str],
                         api_key: str | None = EMULATOR_KEY,
                         faults: FaultPlan = NO_FAULTS) -> str:
    """Start ``slng_fast.emulators.<name>`` on port 0 (misbehaving as ``faults`` says);
    its ws:// base URL."""
    module = importlib.import_module(f"slng_fast.emulators.{name}")
    engine_url = engine_urls[module.ENGINE]

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await module.serve_emulator("127.0.0.1", 0, engine_url=engine_url, api_key=api_key,
                                    faults=faults, task_status=task_status)

    port = await nursery.start(serve)
    return f"ws://127.0.0.1:{port}"


def make_gateway(tmp_path: Path, urls: dict[str, str], info: dict[str, Any],
                 config: Config | None = None,
                 providers: dict[str, ProviderConfig] | None = None) -> Running:
    config = config or Config(data_dir=tmp_path, providers=providers or {})
    store = Store(config.data_dir)
    keys, ids = {}, {}
    for tier in ("free", "pro", "enterprise"):
        key, secret = store.create_key(tier, f"test-{tier}")
        keys[tier], ids[tier] = secret, key.id
    registry = ProviderRegistry(config, urls, info, environ={})
    gateway = Gateway(config=config, store=store, registry=registry)
    return Running("", gateway, store, keys, ids)


async def start_gateway(nursery: trio.Nursery, running: Running) -> Running:
    port = await nursery.start(serve_gateway, running.gateway, "127.0.0.1", 0)
    running.url = f"ws://127.0.0.1:{port}"
    return running


async def start_fronting_gateway(nursery: trio.Nursery, tmp_path: Path,
                                 engines: tuple[dict[str, str], dict[str, Any]], provider: str,
                                 *, url: str | None = None, api_key: str | None = EMULATOR_KEY,
                                 faults: FaultPlan = NO_FAULTS, **settings: Any) -> Running:
    """A gateway whose ``[providers.<provider>]`` is that provider's emulator (misbehaving
    as ``faults`` says) in front of ``engines``, or the server at ``url``; ``api_key`` is
    the key the gateway presents, ``settings`` the rest of its `Config`."""
    urls, info = engines
    if url is None:
        url = await start_emulator(nursery, provider, urls, faults=faults)
    config = Config(data_dir=tmp_path,
                    providers={provider: ProviderConfig(url=url, api_key=api_key)}, **settings)
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))


async def start_gateway_with_piper(nursery: trio.Nursery, tmp_path: Path) -> Running:
    """A gateway with the in-process eSpeak and PocketSphinx engines and a real Piper engine
    process (Piper is GPL: it runs only in its own process)."""
    urls, info = await start_engines(nursery)
    urls["piper"] = await start_engine_process(nursery, "piper")
    info["piper"] = await _engine_info("piper", urls["piper"])
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info))


def child_processes(parent: int) -> list[tuple[int, bytes]]:
    """The children of process ``parent``: (pid, its NUL-separated command line), from /proc."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out.append((int(proc.name), cmdline))
    return out


def engine_pids(gateway_pid: int) -> dict[str, int]:
    """The gateway's engine children, by engine name."""
    out = {}
    for pid, cmdline in child_processes(gateway_pid):
        argv = cmdline.split(b"\0")
        if b"slng_fast.engines" in argv:
            out[argv[argv.index(b"slng_fast.engines") + 1].decode()] = pid
    return out


def worker_pids(gateway_pid: int) -> list[int]:
    """The gateway's worker processes."""
    return [pid for pid, cmdline in child_processes(gateway_pid)
            if b"slng_fast.gateway.worker" in cmdline]


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from /proc (its sockets' inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server: no persistence, its own port and directory."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the shared-limits tests need a real "
                        "one (Debian: apt-get update && apt-get install -y redis-server)",
                        pytrace=False)
        self.binary = binary
        self.directory = directory
        self.extra = extra
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


CLI = [sys.executable, "-m", "slng_fast"]


def listening_url(proc: subprocess.Popen[str], lines: list[str] | None = None,
                  exited: Callable[[], str] | None = None) -> str:
    """Read ``proc``'s stdout (each line kept in ``lines``) up to ``listening on URL``:
    the URL. A process that exits first fails, saying ``exited()`` (else its status)."""
    lines = [] if lines is None else lines
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited: {exited() if exited else proc.poll()}")
        lines.append(line.rstrip("\n"))
        match = re.search(r"listening on (ws://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("serve did not start")


class Served:
    """`slng-fast serve --port 0` as a user runs it, with its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        first_start = not (data_dir / "dev-key").exists()
        env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
        self.proc = subprocess.Popen(CLI + ["serve", "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self.url = listening_url(self.proc, self.lines, lambda: str(self.lines))
        # the dev key (first start only) follows within three more lines
        if first_start:
            for _ in range(3):
                line = self.proc.stdout.readline().rstrip("\n")
                self.lines.append(line)
                if line.startswith("slng_"):
                    break

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


def run_cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
    env.pop("SLNG_API_KEY", None)
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=env,
                          timeout=120, check=check)
