"""``python -m slng_fast.engines espeak|pocketsphinx --host H --port N``

Runs one built-in engine as a WebSocket server in this process. Prints
``READY <port>`` on stdout once listening (``--port 0`` picks a free port) and
exits with status 0 on SIGTERM or SIGINT. The gateway's supervisor starts engines
this way and reads that line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from slng_fast.engines import ENGINES


class _JsonLines(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is outside 0..65535")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])

    from slng_fast.gateway.engine_server import run_engine

    return run_engine(args.engine, args.host, args.port, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
