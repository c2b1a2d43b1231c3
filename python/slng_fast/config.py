"""Gateway configuration: tier limits (PROTOCOL.md section 6 by default, every number
overridable), provider upstreams, and where data lives. Loaded from TOML."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

KB = 1024
# The Redis URL may hold a password: it can come from here rather than a command line
# (`ps` shows those to every user), and the gateway hands it to its workers this way.
REDIS_URL_ENV = "SLNG_FAST_REDIS_URL"
# Likewise the database URL (``postgresql://user:password@...``).
DATABASE_URL_ENV = "SLNG_FAST_DATABASE_URL"
# The key that `/metrics` (and, if asked, `/healthz`) require, when the config has none.
METRICS_KEY_ENV = "SLNG_FAST_METRICS_KEY"


@dataclass(frozen=True)
class TierLimits:
    name: str
    max_connections: int
    max_duration_s: float
    max_message_bytes: int
    messages_per_minute: int
    max_text_chars: int
    max_audio_chunk_bytes: int
    idle_timeout_s: float = 300.0
    heartbeat_s: float = 30.0

    def as_public_dict(self) -> dict[str, Any]:
        """The `limits` object of the `ready` event."""
        return {
            "max_connections": self.max_connections,
            "max_duration_s": self.max_duration_s,
            "max_message_bytes": self.max_message_bytes,
            "messages_per_minute": self.messages_per_minute,
            "max_text_chars": self.max_text_chars,
            "max_audio_chunk_bytes": self.max_audio_chunk_bytes,
            "idle_timeout_s": self.idle_timeout_s,
            "heartbeat_s": self.heartbeat_s,
        }


DEFAULT_TIERS: dict[str, TierLimits] = {
    "free": TierLimits("free", 1, 5 * 60, 16 * KB, 20, 500, 16 * KB),
    "pro": TierLimits("pro", 5, 30 * 60, 32 * KB, 60, 2_000, 32 * KB),
    "enterprise": TierLimits("enterprise", 50, 120 * 60, 128 * KB, 120, 10_000, 64 * KB),
}
TIER_NAMES = tuple(DEFAULT_TIERS)


# OpenAI's model names, for code written against its audio API: each means an endpoint
# of this gateway (``[openai.aliases]`` in the config adds or changes them).
DEFAULT_MODEL_ALIASES: dict[str, str] = {
    "tts-1": "piper", "tts-1-hd": "piper", "gpt-4o-mini-tts": "piper",
    "whisper-1": "pocketsphinx", "gpt-4o-transcribe": "pocketsphinx",
    "gpt-4o-mini-transcribe": "pocketsphinx",
}


@dataclass(frozen=True)
class ProviderConfig:
    url: str | None = None
    api_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # The default fallback chain of this endpoint's sessions (endpoint names), used
    # when ``init``/``start`` names none.
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    tiers: dict[str, TierLimits] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    engines: tuple[str, ...] = ("espeak", "piper", "pocketsphinx")
    # More Piper voices (``.onnx`` paths, the ``.onnx.json`` beside each) for the piper
    # engine, besides the bundled one: ``[engines.piper] voices = [...]``.
    piper_voices: tuple[str, ...] = ()
    # How long shutdown waits for sessions to end before closing them hard.
    shutdown_grace_s: float = 3.0
    # A client that takes no frame for this long is dropped (memory per session stays
    # bounded meanwhile: the session stops reading its upstream).
    slow_client_timeout_s: float = 10.0
    # With Redis: how long a dead worker's connection slots stay taken (renewed every third).
    # Also the ledger's: open sessions' usage is saved every third of it, and the rows of a
    # worker that stopped saving for this long are closed (`worker_lost`).
    lease_ttl_s: float = 15.0
    # Connections not answered yet (request head not in, key not checked), per worker: in
    # total and per client address; past either, a new connection gets 503 at once.
    max_pending_connections: int = 4096
    max_pending_per_address: int = 256
    # Seconds a connection may take to send its request head (then 408).
    handshake_timeout_s: float = 20.0
    # While a client waits on its provider (an utterance, a finalize), a provider that sends
    # nothing for this long is given up on.
    provider_timeout_s: float = 10.0
    # Reaching a provider: the whole budget for its connection and handshake, retries after
    # a refused or failed connection included (then provider_unavailable, 1013).
    upstream_connect_timeout_s: float = 10.0
    # Seconds a provider may take to accept one frame of ours before it counts as stalled.
    upstream_send_timeout_s: float = 10.0
    # Failover (sessions with a fallback chain): a provider that has sent no audio this
    # long after a flush is left for the next; an STT session keeps up to this many
    # seconds of audio not yet covered by a final transcript, for a backup to hear.
    first_audio_timeout_s: float = 5.0
    stt_replay_s: float = 10.0
    # On SIGTERM: stop taking new sessions and let utterances in flight finish for up to
    # this many seconds before ending the rest (0: end them at once, as before).
    drain_s: float = 0.0
    # How often each worker asks the key store for revoked keys among its open sessions'
    # (with PostgreSQL, also how often its key cache syncs: a revocation on any host ends
    # sessions everywhere within this).
    revocation_check_s: float = 0.5
    # Where keys and the usage ledger live: None or ``sqlite:///path`` (the data
    # directory's file by default), or ``postgresql://...`` (shared by every host).
    database: str | None = None
    # When set, `GET /metrics` needs `Authorization: Bearer <metrics_key>`; so does
    # `GET /healthz` if `healthz_needs_key`. Unset (the default), both are open: load
    # balancers probe /healthz without credentials.
    metrics_key: str | None = None
    healthz_needs_key: bool = False
    # The OpenAI-compatible routes: model aliases, and the largest upload
    # (POST /v1/audio/transcriptions; OpenAI's own limit is 25 MB) and the seconds a
    # request body may take to arrive.
    model_aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    max_upload_bytes: int = 25 * 1000 * 1000
    http_body_timeout_s: float = 60.0
    # `GET /v1/voices`: a cloud provider with a key configured is asked for its voices,
    # waiting at most `voices_fetch_timeout_s`; an answer is kept `voices_cache_ttl_s`
    # (a failure, during which the documented voices are listed, at most a minute).
    voices_cache_ttl_s: float = 600.0
    voices_fetch_timeout_s: float = 3.0
    # The STT endpoint of ``/v1/realtime?intent=transcription`` when the URL's ``model``
    # names none of the gateway's (absent, or an OpenAI model name such as whisper-1).
    realtime_stt: str = "pocketsphinx"


def default_data_dir() -> Path:
    env = os.environ.get("SLNG_FAST_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "slng-fast"


class ConfigError(ValueError):
    pass


_TIER_FIELDS = {f.name for f in fields(TierLimits)} - {"name"}


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read a TOML file (optional) and apply command-line overrides (None means unset)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc

    gateway = raw.get("gateway", {})
    tiers = dict(DEFAULT_TIERS)
    for name, table in raw.get("tiers", {}).items():
        if name not in tiers:
            raise ConfigError(f"unknown tier {name!r}; tiers are {', '.join(TIER_NAMES)}")
        unknown = set(table) - _TIER_FIELDS
        if unknown:
            raise ConfigError(f"unknown limit(s) {sorted(unknown)} in [tiers.{name}]")
        for key, value in table.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"[tiers.{name}] {key} must be a positive number")
        tiers[name] = replace(tiers[name], **table)

    providers = {}
    for name, table in raw.get("providers", {}).items():
        table = dict(table)
        fallback = table.pop("fallback", [])
        if not isinstance(fallback, list) or not all(isinstance(f, str) and f for f in fallback):
            raise ConfigError(f"[providers.{name}] fallback must be a list of endpoint names")
        providers[name] = ProviderConfig(
            url=table.pop("url", None), api_key=table.pop("api_key", None), options=table,
            fallback=tuple(fallback),
        )

    values: dict[str, Any] = {
        "tiers": tiers,
        "providers": providers,
    }
    for key in ("host", "port", "shutdown_grace_s", "slow_client_timeout_s", "lease_ttl_s",
                "max_pending_connections", "max_pending_per_address", "handshake_timeout_s",
                "drain_s", "provider_timeout_s", "revocation_check_s",
                "upstream_connect_timeout_s", "upstream_send_timeout_s", "realtime_stt",
                "max_upload_bytes", "http_body_timeout_s",
                "voices_cache_ttl_s", "voices_fetch_timeout_s",
                "first_audio_timeout_s", "stt_replay_s"):
        if key in gateway:
            values[key] = gateway[key]
    if "database" in gateway:
        database = gateway["database"]
        if not isinstance(database, str) or not database.startswith(
                ("sqlite://", "postgresql://", "postgres://")):
            raise ConfigError("[gateway] database must be a sqlite:// or postgresql:// URL")
        values["database"] = database
    if "data_dir" in gateway:
        values["data_dir"] = Path(gateway["data_dir"]).expanduser()
    if "engines" in gateway:
        values["engines"] = tuple(gateway["engines"])
    piper = raw.get("engines", {}).get("piper", {})
    voices = piper.get("voices", [])
    if not isinstance(voices, list) or not all(isinstance(v, str) and v for v in voices):
        raise ConfigError("[engines.piper] voices must be a list of paths to Piper voices")
    values["piper_voices"] = tuple(str(Path(v).expanduser()) for v in voices)
    metrics_key = gateway.get("metrics_key", os.environ.get(METRICS_KEY_ENV) or None)
    if metrics_key is not None and (not isinstance(metrics_key, str) or not metrics_key.strip()):
        raise ConfigError("[gateway] metrics_key must be a non-empty string")
    values["metrics_key"] = metrics_key
    healthz_needs_key = gateway.get("healthz_needs_key", False)
    if not isinstance(healthz_needs_key, bool):
        raise ConfigError("[gateway] healthz_needs_key must be true or false")
    if healthz_needs_key and metrics_key is None:
        raise ConfigError("[gateway] healthz_needs_key needs metrics_key (or "
                          f"${METRICS_KEY_ENV})")
    values["healthz_needs_key"] = healthz_needs_key
    aliases = raw.get("openai", {}).get("aliases", {})
    if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in aliases.items()):
        raise ConfigError("[openai.aliases] maps model names to endpoint names (strings)")
    values["model_aliases"] = {**DEFAULT_MODEL_ALIASES, **aliases}
    for key, value in overrides.items():
        if value is not None:
            values[key] = Path(value) if key == "data_dir" else value
    return Config(**values)
