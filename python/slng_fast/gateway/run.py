"""``slng-fast serve``: the gateway process with its engines, signals and startup notes.

One worker serves in this process. With ``--workers N`` this process keeps the engines
and N worker processes (``python -m slng_fast.gateway.worker``), each one trio loop,
listen on the same port (SO_REUSEPORT); they share the engines, the key store (SQLite in
the data directory, or PostgreSQL with ``--database``) and, through Redis (``--redis``, required then), the limits.
Workers learn of engine restarts on their stdin (``engine_feed``) and get the Redis URL
in their environment."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from slng_fast.config import DATABASE_URL_ENV, REDIS_URL_ENV, Config
from slng_fast.database import open_store
from slng_fast.engines.supervisor import EngineSupervisor
from slng_fast.gateway.engine_feed import feed_engines
from slng_fast.gateway.native_transport import open_reuse_port_listener
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.limits import LocalLimits
from slng_fast.protocol.audio import prewarm_resamplers
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import STORE_ERRORS, StoreBackend, ensure_dev_key

log = logging.getLogger("slng_fast.gateway")

WORKER_RESTART_DELAY = 1.0


def make_ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


@asynccontextmanager
async def open_limits(redis_url: str | None, worker_id: str,
                      lease_ttl_s: float = 15.0) -> AsyncIterator[Any]:
    """The limits backend: this process's own, or Redis shared by every worker and host
    (with the task that keeps this worker's connection leases alive)."""
    if not redis_url:
        yield LocalLimits()
        return
    from slng_fast.gateway.redis_client import RedisUnavailable, open_redis
    from slng_fast.gateway.shared_limits import LeaseKeeper, RedisLimits, SharedLimits

    async with open_redis(redis_url) as redis, trio.open_nursery() as nursery:
        limits = RedisLimits(redis, lease_ttl_s=lease_ttl_s)
        try:
            await limits.check()
        except RedisUnavailable:
            pass  # logged; new sessions get 1013 until Redis answers
        shared = SharedLimits(limits, worker_id)
        await nursery.start(LeaseKeeper(limits, on_revoked=shared.revoked_seen).run)
        await nursery.start(shared.run_releases)
        yield shared
        nursery.cancel_scope.cancel()


async def serve_one_worker(config: Config, store: StoreBackend, registry: ProviderRegistry, *,
                           redis_url: str | None, ssl_context: ssl.SSLContext | None,
                           transport: str, reuse_port: bool, shutdown: trio.Event,
                           worker_id: str,
                           task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """One gateway loop until ``shutdown``; then it drains (``drain_s``: no new sessions,
    the work in flight finishes), its remaining sessions end (1001) and it returns."""
    async with open_limits(redis_url, worker_id, config.lease_ttl_s) as limits:
        gateway = Gateway(config=config, store=store, registry=registry, limits=limits,
                          worker_id=worker_id)
        async with trio.open_nursery() as nursery:
            # Off the loop: the first session of each rate pair would otherwise wait for it.
            nursery.start_soon(partial(trio.to_thread.run_sync, prewarm_resamplers,
                                       abandon_on_cancel=True))
            port = await nursery.start(lambda task_status: serve_gateway(
                gateway, config.host, config.port, ssl_context=ssl_context,
                transport=transport, reuse_port=reuse_port, task_status=task_status))
            task_status.started(port)
            await shutdown.wait()
            await drain(gateway, config.drain_s)
            gateway.shutdown.set()
            with trio.move_on_after(config.shutdown_grace_s + 1):
                while gateway.active:  # noqa: ASYNC110 - polled
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def drain(gateway: Gateway, seconds: float) -> None:
    """Stop taking sessions and let those with work in flight finish, ``seconds`` at most
    (each ends by itself once idle); then the caller ends the rest."""
    if seconds <= 0:
        return
    log.info("draining: no new sessions; %d open, %.0f s to finish", gateway.active, seconds)
    gateway.draining.set()
    with trio.move_on_after(seconds):
        while gateway.active:  # noqa: ASYNC110 - polled
            await trio.sleep(0.05)


async def run_gateway(config: Config, certfile: str | None = None,
                      keyfile: str | None = None, *, transport: str = "native",
                      workers: int = 1, redis_url: str | None = None,
                      config_path: str | None = None,
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    store = open_store(config.database, config.data_dir)
    try:
        applied = store.migrate()  # several hosts at once: each migration applies once
    except STORE_ERRORS as exc:
        store.close()
        raise SystemExit(f"slng-fast: cannot bring the database up to date: {exc}") from exc
    if applied:
        log.info("database migrations applied: %s", applied)
    crashed = store.close_crashed()
    if crashed:
        log.warning("closed %d usage rows left open by a crashed gateway", crashed)
    dev_key = ensure_dev_key(store, config.data_dir)
    ssl_context = make_ssl_context(certfile, keyfile)
    supervisor = EngineSupervisor(config.engines, args={
        "piper": [arg for path in config.piper_voices for arg in ("--voice", path)]})
    shutdown = trio.Event()
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                if workers == 1:
                    registry = ProviderRegistry(config, supervisor.urls, supervisor.info)
                    port = await nursery.start(lambda task_status: serve_one_worker(
                        config, store, registry, redis_url=redis_url, ssl_context=ssl_context,
                        transport=transport, reuse_port=False, shutdown=shutdown,
                        worker_id=uuid.uuid4().hex[:8], task_status=task_status))
                else:
                    port = await nursery.start(lambda task_status: run_workers(
                        config, workers, supervisor, redis_url=redis_url, certfile=certfile,
                        keyfile=keyfile, transport=transport, config_path=config_path,
                        shutdown=shutdown, task_status=task_status))
                scheme = "wss" if ssl_context else "ws"
                print(f"slng-fast gateway listening on {scheme}://{config.host}:{port}"
                      + (f" ({workers} workers)" if workers > 1 else ""), flush=True)
                print(f"  try: slng-fast say \"Hello from slng-fast\" -o hello.wav --url "
                      f"{scheme}://{config.host}:{port}", flush=True)
                if dev_key:
                    print("created a development key (tier pro); it is shown only this once and "
                          f"stored in {config.data_dir / 'dev-key'}:", flush=True)
                    print(dev_key, flush=True)
                web = "https" if ssl_context else "http"
                print(f"  or open {web}://{config.host}:{port}/ in a browser (the playground)",
                      flush=True)
                task_status.started(port)
                async for signum in signals:
                    log.info("signal %s: shutting down", signal.Signals(signum).name)
                    break
                shutdown.set()
                with trio.move_on_after(config.drain_s + config.shutdown_grace_s + 5):
                    await _wait_idle(nursery, supervisor)
                nursery.cancel_scope.cancel()
    finally:
        store.close()


async def _wait_idle(nursery: trio.Nursery, supervisor: EngineSupervisor) -> None:
    # Everything but the engine supervisor ends by itself once shutdown is set.
    while len(nursery.child_tasks) > 1:  # noqa: ASYNC110 - polled
        await trio.sleep(0.05)


async def run_workers(config: Config, count: int, supervisor: EngineSupervisor, *,
                      redis_url: str | None, certfile: str | None, keyfile: str | None,
                      transport: str, config_path: str | None, shutdown: trio.Event,
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Start ``count`` worker processes on one port and restart any that dies, until
    ``shutdown``; then SIGTERM them and wait."""
    # Hold the port (bound, SO_REUSEPORT, not accepting) so port 0 picks one port for all.
    holder = await open_reuse_port_listener(config.host, config.port)
    port = holder.socket.getsockname()[1]
    holder.socket.close()  # bound with SO_REUSEPORT, it only kept the number for us
    base = [sys.executable, "-m", "slng_fast.gateway.worker", "--host", config.host,
            "--port", str(port), "--data-dir", str(config.data_dir), "--transport", transport,
            "--parent-pid", str(os.getpid()), "--drain-s", str(config.drain_s)]
    if config_path:
        base += ["--config", config_path]
    if certfile:
        base += ["--certfile", certfile] + (["--keyfile", keyfile] if keyfile else [])
    # Secrets go through the environment, which only this user can read (not `ps`).
    env = {name: value for name, value in os.environ.items()
           if name not in (REDIS_URL_ENV, DATABASE_URL_ENV)}
    if redis_url:
        env[REDIS_URL_ENV] = redis_url
    if config.database:
        env[DATABASE_URL_ENV] = config.database

    def command(n: int) -> list[str]:
        # The engines as they are now; later changes reach the worker on its stdin.
        state = supervisor.snapshot()
        return base + ["--worker-id", f"w{n}", "--engine-urls", json.dumps(state["urls"]),
                       "--engine-info", json.dumps(state["info"])]

    async def keep_worker(n: int, task_status: trio.TaskStatus[None]) -> None:
        first = True
        while not shutdown.is_set():
            process = await trio.lowlevel.open_process(
                command(n), stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=env)
            assert process.stdout is not None and process.stdin is not None
            line = b""
            with trio.move_on_after(60):
                while b"\n" not in line:
                    chunk = await process.stdout.receive_some(1024)
                    if not chunk:
                        break
                    line += chunk
            if first:
                task_status.started()
                first = False
            log.info("worker w%d ready (pid %d)", n, process.pid)
            try:
                async with trio.open_nursery() as inner:
                    async def stop_on_shutdown(process: trio.Process = process) -> None:
                        await shutdown.wait()
                        process.send_signal(signal.SIGTERM)
                    inner.start_soon(stop_on_shutdown)
                    inner.start_soon(feed_engines, supervisor, process.stdin)
                    await process.wait()
                    inner.cancel_scope.cancel()
            finally:
                if process.returncode is None:
                    process.kill()
                for pipe in (process.stdin, process.stdout):
                    await trio.aclose_forcefully(pipe)
            if not shutdown.is_set():
                log.warning("worker w%d exited with %s; restarting", n, process.returncode)
                await trio.sleep(WORKER_RESTART_DELAY)

    async with trio.open_nursery() as nursery:
        for n in range(count):
            await nursery.start(keep_worker, n)
        task_status.started(port)
