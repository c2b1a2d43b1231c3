"""One worker process of ``slng-fast serve --workers N``: a gateway loop on the shared
port (SO_REUSEPORT), reaching the engines the parent started, with Redis-backed limits
(the URL in ``$SLNG_FAST_REDIS_URL``, never on the command line: it may hold a password;
likewise the database's in ``$SLNG_FAST_DATABASE_URL``).
Prints ``READY`` once it listens; reads the engines' new URLs on stdin when the parent
restarts one; SIGTERM ends its sessions (1001) and exits 0; it also stops if the parent
dies."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import trio

from slng_fast.config import DATABASE_URL_ENV, REDIS_URL_ENV, ConfigError, load_config
from slng_fast.database import open_store
from slng_fast.gateway.collector import tune_collector
from slng_fast.gateway.engine_feed import follow_engines
from slng_fast.gateway.run import make_ssl_context, serve_one_worker
from slng_fast.logs import setup_logging
from slng_fast.providers.registry import ProviderRegistry

log = logging.getLogger("slng_fast.gateway")


async def run_worker(args: argparse.Namespace) -> None:
    config = load_config(args.config, host=args.host, port=args.port, data_dir=args.data_dir,
                         drain_s=args.drain_s,
                         database=os.environ.get(DATABASE_URL_ENV) or None)
    store = open_store(config.database, config.data_dir)  # the parent applied migrations
    registry = ProviderRegistry(config, json.loads(args.engine_urls), json.loads(args.engine_info))
    redis_url = os.environ.get(REDIS_URL_ENV) or None
    shutdown = trio.Event()
    served = trio.Event()  # the gateway loop has ended its sessions and returned

    async def serve(task_status: trio.TaskStatus[int]) -> None:
        try:
            await serve_one_worker(
                config, store, registry, redis_url=redis_url,
                ssl_context=make_ssl_context(args.certfile, args.keyfile),
                transport=args.transport, reuse_port=True, shutdown=shutdown,
                worker_id=f"{args.worker_id}-{os.getpid()}", task_status=task_status)
        finally:
            served.set()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            print("READY", flush=True)
            feed = _parent_pipe()
            if feed is not None:
                nursery.start_soon(follow_engines, feed, registry.engine_urls,
                                   registry.engine_info)

            async def stop_when_orphaned() -> None:
                while os.getppid() == args.parent_pid:  # noqa: ASYNC110 - polled
                    await trio.sleep(0.5)
                log.warning("worker %s: the gateway is gone; stopping", args.worker_id)
                shutdown.set()

            if args.parent_pid:
                nursery.start_soon(stop_when_orphaned)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    shutdown.set()
                    return

            nursery.start_soon(stop_on_signal)
            await shutdown.wait()
            # The engine feed and the orphan watch never end by themselves: once the
            # gateway loop is done (its sessions ended), stop them rather than waiting
            # out the longest drain and grace it might have needed. The deadline is
            # the backstop should the loop itself not end.
            nursery.cancel_scope.deadline = trio.current_time() + config.drain_s + config.shutdown_grace_s + 3
            await served.wait()
            nursery.cancel_scope.cancel()
    store.close()


def _parent_pipe() -> trio.lowlevel.FdStream | None:
    """Stdin, where the parent writes the engines' state; None when run by hand."""
    try:
        return None if os.isatty(0) else trio.lowlevel.FdStream(os.dup(0))
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slng_fast.gateway.worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--config")
    parser.add_argument("--transport", default="native")
    parser.add_argument("--engine-urls", default="{}")
    parser.add_argument("--engine-info", default="{}")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--worker-id", default="w0")
    parser.add_argument("--drain-s", type=float, default=None)
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    tune_collector()
    try:
        trio.run(run_worker, args)
    except ConfigError as exc:
        print(f"slng-fast worker: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
