"""The ``slng-fast`` command: run the gateway, manage keys, and use the gateway like
any client would (``say``, ``transcribe``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from slng_fast.config import (
    DATABASE_URL_ENV,
    REDIS_URL_ENV,
    TIER_NAMES,
    ConfigError,
    default_data_dir,
    load_config,
)
from slng_fast.database import open_store
from slng_fast.logs import setup_logging
from slng_fast.store import DEV_KEY_FILE, STORE_ERRORS, StoreBackend


def data_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) else default_data_dir()


def database_of(args: argparse.Namespace) -> str | None:
    """``--database``, else ``$SLNG_FAST_DATABASE_URL``, else ``[gateway] database`` of
    ``--config``; None is the data directory's SQLite file."""
    if getattr(args, "database", None):
        return str(args.database)
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env
    if getattr(args, "config", None):
        return load_config(args.config).database
    return None


def open_store_of(args: argparse.Namespace) -> StoreBackend:
    return open_store(database_of(args), data_dir_of(args))


def on_store(args: argparse.Namespace, failed: str, call: Callable[[StoreBackend], int]) -> int:
    """Run ``call`` on the store of ``args`` and close it. The exit status: 2 when the
    store cannot be named (bad configuration), 1 when it fails (``failed: why``)."""
    try:
        store = open_store_of(args)
    except (ConfigError, ValueError) as exc:
        print(f"slng-fast: {exc}", file=sys.stderr)
        return 2
    try:
        return call(store)
    except STORE_ERRORS as exc:
        print(f"slng-fast: {failed}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def default_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    env = os.environ.get("SLNG_API_KEY")
    if env:
        return env
    path = data_dir_of(args) / DEV_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    raise SystemExit("no API key: pass --key, set SLNG_API_KEY, or start `slng-fast serve` once")


# -- serve ------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from slng_fast.database import check_database_url
    from slng_fast.gateway.collector import tune_collector
    from slng_fast.gateway.run import run_gateway

    try:
        config = load_config(args.config, host=args.host, port=args.port, data_dir=args.data_dir,
                             drain_s=args.drain_s,
                             database=args.database or os.environ.get(DATABASE_URL_ENV) or None)
        check_database_url(config.database)
    except (ConfigError, ValueError) as exc:
        print(f"slng-fast: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("slng-fast: --workers must be at least 1", file=sys.stderr)
        return 2
    redis_url = args.redis or os.environ.get(REDIS_URL_ENV) or None
    if args.workers > 1 and not redis_url:
        print("slng-fast: several workers share their limits through Redis: give --redis URL "
              "(for example redis://127.0.0.1:6379/0)", file=sys.stderr)
        return 2
    if args.workers > 1 and args.transport != "native":
        print("slng-fast: --workers needs the native transport", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    tune_collector()
    trio.run(partial(run_gateway, config, args.certfile, args.keyfile, transport=args.transport,
                     workers=args.workers, redis_url=redis_url, config_path=args.config))
    return 0


# -- keys -------------------------------------------------------------------------------
def cmd_keys(args: argparse.Namespace) -> int:
    return on_store(args, "the key store failed", partial(keys_command, args))


def keys_command(args: argparse.Namespace, store: StoreBackend) -> int:
    if args.keys_command == "create":
        key, secret = store.create_key(args.tier, args.name or "")
        print(f"created key {key.id} (tier {key.tier}); it is shown only once:")
        print(secret)
    elif args.keys_command == "list":
        for key in store.list_keys():
            state = "revoked" if key.revoked_at else "active"
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created_at))
            print(f"{key.id}  {key.tier:<10} {state:<8} {created}  {key.name}")
    elif args.keys_command == "revoke":
        return revoke_key(store, args.id, args.redis)
    return 0


# -- usage, db ----------------------------------------------------------------------------
USAGE_FIELDS = ("session_id", "key_id", "endpoint", "providers", "characters", "messages",
                "audio_in_s", "audio_out_s", "started_at", "ended_at", "reason")


def parse_since(text: str) -> float:
    """A date (``2026-12-01``, UTC midnight) or ISO time (``2026-12-01T08:00:00Z``)."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(at: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def cmd_usage(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else 0.0
    except ValueError as exc:
        print(f"slng-fast: {exc}", file=sys.stderr)
        return 2
    return on_store(args, "the usage ledger failed", partial(print_usage, args, since))


def print_usage(args: argparse.Namespace, since: float, store: StoreBackend) -> int:
    import csv
    import json

    rows = store.usage_report(args.key, since)
    out = [{name: row[name] for name in USAGE_FIELDS} for row in rows]
    for row in out:
        row["started_at"], row["ended_at"] = iso(row["started_at"]), iso(row["ended_at"])
        row["providers"] = list(row["providers"])
    if args.format == "json":
        print(json.dumps(out, indent=1))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=USAGE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in out:
            writer.writerow({**row, "providers": " ".join(row["providers"])})
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    return on_store(args, "cannot migrate the database", migrate)


def migrate(store: StoreBackend) -> int:
    applied = store.migrate()
    print(f"applied migrations {applied}" if applied else "the database is up to date")
    return 0


def revoke_key(store: StoreBackend, key_id: str, redis_url: str | None) -> int:
    """Revoke in the key store (the workers of this host end the key's open sessions
    within seconds and publish it to Redis); with ``redis_url``, publish it to every
    host at once too. A key revoked earlier is published again with ``--redis``."""
    revoked_at = store.revoke_key(key_id)
    if revoked_at is None:
        revoked_at = store.revoked_at(key_id) if redis_url else None
        if revoked_at is None:
            print(f"slng-fast: no active key {key_id!r}", file=sys.stderr)
            return 1
        print(f"key {key_id} was already revoked")
    else:
        print(f"revoked key {key_id}")
    if not redis_url:
        return 0
    import trio

    from slng_fast.gateway.redis_client import RedisUnavailable, open_redis
    from slng_fast.gateway.shared_limits import RedisLimits

    async def publish() -> None:
        async with open_redis(redis_url) as redis:
            await RedisLimits(redis).revoke(key_id, revoked_at)

    try:
        trio.run(publish)
    except (RedisUnavailable, ValueError) as exc:
        print(f"slng-fast: could not publish the revocation to Redis ({exc}); the gateway's "
              "workers on this host publish it within seconds", file=sys.stderr)
        return 1
    print(f"published the revocation to {redis_url.split('@')[-1]}")
    return 0


# -- client commands ----------------------------------------------------------------------
def cmd_say(args: argparse.Namespace) -> int:
    import trio

    from slng_fast.gateway.client import say

    key = default_key(args)
    result = trio.run(lambda: say(args.url, key, args.text, provider=args.provider,
                                  voice=args.voice, codec=args.codec, sample_rate=args.sample_rate))
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    from slng_fast.wavfile import write_wav

    write_wav(args.output, result.audio, result.sample_rate, result.codec)
    print(f"time to first audio: {result.first_audio_ms:.0f} ms")
    print(f"audio duration: {result.duration_ms / 1000:.2f} s -> {args.output}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    import trio

    from slng_fast.gateway.client import transcribe
    from slng_fast.wavfile import read_wav

    key = default_key(args)
    audio, rate, codec = read_wav(args.input)

    def show(text: str) -> None:
        print(f"partial: {text}", flush=True)

    result = trio.run(lambda: transcribe(args.url, key, audio, rate, codec, model=args.model,
                                         realtime=args.realtime, on_partial=show))
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    print(f"final: {result.text}")
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    import trio

    from slng_fast.emulators.faults import FaultPlan
    from slng_fast.gateway.emulate import run_emulator

    setup_logging(args.log_level)
    try:
        faults = FaultPlan.from_args(args)
    except ValueError as exc:
        print(f"slng-fast emulate: {exc}", file=sys.stderr)
        return 2
    trio.run(run_emulator, args.provider, args.host, args.port, args.api_key, faults)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slng-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="data directory (default: $SLNG_FAST_HOME or "
                       f"{default_data_dir()})")

    def database_option(p: argparse.ArgumentParser, with_config: bool = True,
                        default: object = None) -> None:
        """``default=argparse.SUPPRESS`` on a subcommand, so it does not undo the same
        option given before the subcommand's name."""
        p.add_argument("--database", default=default, help="sqlite:///path (default: the "
                       "data directory's file) or postgresql://... shared by every host "
                       f"(default ${DATABASE_URL_ENV}, then [gateway] database)")
        if with_config:
            p.add_argument("--config", default=default,
                           help="TOML config file (for [gateway] database)")

    serve = sub.add_parser("serve", help="run the gateway and its built-in engines")
    serve.add_argument("--host", default=None, help="default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default 8765")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--certfile", help="serve TLS (wss://) with this certificate")
    serve.add_argument("--keyfile", help="private key for --certfile")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--transport", choices=("native", "trio-websocket"), default="native",
                       help="WebSocket frame layer: the native core (default) or trio-websocket")
    serve.add_argument("--drain-s", type=float, default=None,
                       help="on SIGTERM, stop taking sessions and let the work in flight "
                       "finish for up to this many seconds (default 0, or [gateway] drain_s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes on the one port (SO_REUSEPORT); more than one "
                       "needs --redis")
    serve.add_argument("--redis", help="Redis URL (redis:// or rediss://) for limits shared by "
                       f"every worker and host (default ${REDIS_URL_ENV}: keeps a password "
                       "off the command line)")
    database_option(serve, with_config=False)
    data_dir_option(serve)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    data_dir_option(keys)
    database_option(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--tier", choices=TIER_NAMES, required=True)
    create.add_argument("--name", default="")
    listing = keys_sub.add_parser("list", help="list keys")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id; open sessions end (4000)")
    for p in (create, listing, revoke):
        database_option(p, default=argparse.SUPPRESS)
        p.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    revoke.add_argument("id")
    revoke.add_argument("--redis", help="also publish it to this Redis (the URL the gateways "
                        "use), so every host ends the key's sessions at once")
    keys.set_defaults(func=cmd_keys)

    usage = sub.add_parser("usage", help="report the usage ledger's sessions")
    usage.add_argument("--key", help="only this key id")
    usage.add_argument("--since", help="sessions started at this date (UTC) or time, or later")
    usage.add_argument("--format", choices=("csv", "json"), default="csv")
    data_dir_option(usage)
    database_option(usage)
    usage.set_defaults(func=cmd_usage)

    db = sub.add_parser("db", help="the key store and ledger's database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply the schema migrations it lacks "
                                "(serve does this at start-up)")
    data_dir_option(migrate)
    database_option(migrate)
    migrate.set_defaults(func=cmd_db)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default="ws://127.0.0.1:8765", help="gateway URL")
        p.add_argument("--key", help="API key (default: $SLNG_API_KEY, then the dev key)")
        data_dir_option(p)

    say = sub.add_parser("say", help="speak text through the gateway into a WAV file")
    say.add_argument("text")
    say.add_argument("--provider", default="piper",
                     help="TTS endpoint (default piper; espeak speaks 100 languages)")
    say.add_argument("--voice")
    say.add_argument("--codec", choices=("pcm16", "mulaw", "alaw"), default="pcm16")
    say.add_argument("--sample-rate", type=int, default=24000)
    say.add_argument("-o", "--output", default="out.wav")
    client_options(say)
    say.set_defaults(func=cmd_say)

    tr = sub.add_parser("transcribe", help="transcribe a WAV file through the gateway")
    tr.add_argument("input")
    tr.add_argument("--model", default="pocketsphinx")
    tr.add_argument("--realtime", action="store_true", help="send audio at real-time pace")
    client_options(tr)
    tr.set_defaults(func=cmd_transcribe)
    from slng_fast.emulators import EMULATORS
    from slng_fast.emulators.faults import FaultPlan

    emulate = sub.add_parser("emulate", help="run a local emulator of a provider's own protocol")
    emulate.add_argument("provider", choices=EMULATORS)
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulate.add_argument("--api-key", default=None,
                         help="the credential the emulator demands (default: accept any)")
    emulate.add_argument("--log-level", default="info")
    FaultPlan.add_arguments(emulate)
    emulate.set_defaults(func=cmd_emulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
