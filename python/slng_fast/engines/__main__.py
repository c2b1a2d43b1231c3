"""``python -m slng_fast.engines espeak|piper|pocketsphinx --host H --port N``

Runs one built-in engine as a WebSocket server in this process. Prints
``READY <port>`` on stdout once listening (``--port 0`` picks a free port) and
exits with status 0 on SIGTERM or SIGINT. The gateway's supervisor starts engines
this way and reads that line. ``--voice PATH`` (piper, repeatable) adds a Piper voice.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from slng_fast.engines import ENGINES
from slng_fast.logs import setup_logging

log = logging.getLogger("slng_fast.engines")

# Each engine's server, imported only in the process that runs it: importing this module
# (as the gateway's supervisor or a test might) loads neither engine.
_SERVERS = {
    "espeak": ("slng_fast.engines.espeak_server", "serve_espeak_engine"),
    "piper": ("slng_fast.engines.piper_server", "serve_piper_engine"),
    "pocketsphinx": ("slng_fast.engines.sphinx_server", "serve_sphinx_engine"),
}


async def _wait_for_parent_exit(parent_pid: int) -> None:
    """Return once the process that started us is gone (we are re-parented).

    Polling is used rather than PR_SET_PDEATHSIG, which fires when the *thread* that
    forked us exits: trio starts processes from worker threads that end when idle."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - nothing to wait on but the pid
        await trio.sleep(0.5)


def run_engine(name: str, host: str, port: int, parent_pid: int | None = None,
               options: dict[str, Any] | None = None) -> int:
    """Run engine ``name`` until SIGTERM or SIGINT (or until ``parent_pid`` dies);
    the process's main.

    Prints ``READY <port>`` on stdout (one line, flushed) once listening. Returns
    the process exit status: 0 after a signal. ``options`` go to the engine's server.
    """
    module, function = _SERVERS[name]
    serve: Callable[..., Any] = getattr(importlib.import_module(module), function)

    async def main() -> None:
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("engine %s stopping on signal %s", name, signum)
                    shutdown.set()
                    return

            async def stop_when_orphaned(pid: int) -> None:
                await _wait_for_parent_exit(pid)
                log.warning("engine %s: the gateway (pid %d) is gone; stopping", name, pid)
                shutdown.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signal)
                if parent_pid is not None:
                    nursery.start_soon(stop_when_orphaned, parent_pid)
                # Graceful: on shutdown clients get 1001 and the server returns once they
                # are closed; then the watchers above are cancelled.
                async with trio.open_nursery() as server:
                    bound = await server.start(partial(serve, shutdown=shutdown, **(options or {})), host, port)
                    print(f"READY {bound}", flush=True)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:  # a signal that arrived before the receiver was open
        return 0
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slng_fast.engines",
        description="Run a built-in slng-fast speech engine as a local WebSocket server.",
    )
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="logging on stderr, one JSON object a line (default warning)",
    )
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when the process with this id exits (used by the gateway)")
    parser.add_argument("--voice", action="append", default=[], metavar="PATH",
                        help="piper: a Piper voice (.onnx, its .onnx.json beside it) to offer "
                             "besides the bundled one; repeatable")
    args = parser.parse_args(argv)
    if args.voice and args.engine != "piper":
        parser.error("--voice is for the piper engine only")
    for voice in args.voice:
        model = Path(voice).expanduser()
        if model.name.endswith(".onnx.json"):
            model = model.with_suffix("")
        if not model.is_file() or not Path(f"{model}.json").is_file():
            parser.error(f"--voice {voice}: a Piper voice is NAME.onnx with NAME.onnx.json "
                         "beside it")
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is outside 0..65535")
    setup_logging(args.log_level)

    options = {"voices": args.voice} if args.engine == "piper" else {}
    return run_engine(args.engine, args.host, args.port, args.parent_pid, options)


if __name__ == "__main__":
    sys.exit(main())
