"""``slng-fast serve``: the gateway process with its engines, signals and startup notes."""

from __future__ import annotations

import logging
import signal
import ssl

import trio

from slng_fast.cli import ensure_dev_key
from slng_fast.config import Config
from slng_fast.gateway.engines import EngineSupervisor
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store

log = logging.getLogger("slng_fast.gateway")


async def run_gateway(config: Config, certfile: str | None = None,
                      keyfile: str | None = None, *, transport: str = "native",
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    store = Store(config.data_dir)
    crashed = store.close_crashed()
    if crashed:
        log.warning("closed %d usage rows left open by a crashed gateway", crashed)
    dev_key = ensure_dev_key(store, config.data_dir)
    ssl_context = None
    if certfile:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(certfile, keyfile)
    supervisor = EngineSupervisor(config.engines)
    registry = ProviderRegistry(config, supervisor.urls, supervisor.info)
    gateway = Gateway(config=config, store=store, registry=registry)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                port = await nursery.start(lambda task_status: serve_gateway(
                    gateway, config.host, config.port, ssl_context=ssl_context,
                    transport=transport, task_status=task_status))
                scheme = "wss" if ssl_context else "ws"
                print(f"slng-fast gateway listening on {scheme}://{config.host}:{port}", flush=True)
                print(f"  try: slng-fast say \"Hello from slng-fast\" -o hello.wav --url "
                      f"{scheme}://{config.host}:{port}", flush=True)
                if dev_key:
                    print("created a development key (tier pro); it is shown only this once and "
                          f"stored in {config.data_dir / 'dev-key'}:", flush=True)
                    print(dev_key, flush=True)
                task_status.started(port)

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.info("signal %s: shutting down", signal.Signals(signum).name)
                        gateway.shutdown.set()
                        return

                nursery.start_soon(stop_on_signal)
                await gateway.shutdown.wait()
                with trio.move_on_after(config.shutdown_grace_s + 1):
                    while gateway.active:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    finally:
        store.close()
