"""The handshake: which endpoint a path names, which key the client presents, and the
query parameters that preset init/start fields (PROTOCOL.md sections 1 and 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

_PATH = re.compile(r"^/v1/(tts|stt)/([a-z0-9][a-z0-9-]*?)-websocket-stream/?$")
# Drop-in routes: a provider's own paths under /<provider>/, for its official SDK with only
# the base URL and key changed. Only the streaming sockets the gateway relays, path for
# path as the SDKs request them: the rest of the path goes upstream with the operator's
# provider key, so nothing else may.
DROP_IN: dict[str, tuple[str, re.Pattern[str]]] = {
    "elevenlabs": ("tts", re.compile(r"/v1/text-to-speech/[A-Za-z0-9_-]+/(multi-)?stream-input")),
    "deepgram": ("tts", re.compile(r"/v1/speak")),
    "cartesia": ("tts", re.compile(r"/tts/websocket")),
}
# OpenAI's Realtime API: the transcription intent is served (an STT session).
REALTIME_PATH = "/v1/realtime"
# How a browser passes OpenAI's SDK its key (it cannot set headers); answered "realtime".
OPENAI_KEY_SUBPROTOCOL = "openai-insecure-api-key."
# Where each SDK puts its API key, besides Authorization and the query (PROTOCOL.md 2).
KEY_HEADERS = ("xi-api-key", "x-api-key", "cartesia-api-key", "kyutai-api-key")
PRESET_FIELDS = ("voice_id", "voice", "language", "codec", "encoding", "sample_rate_hz",
                 "sample_rate", "context_id")


@dataclass(frozen=True)
class Route:
    kind: str  # "tts" or "stt"
    name: str
    query: dict[str, str]
    # For a drop-in route: the provider's own path and query string, relayed natively.
    passthrough: tuple[str, str] | None = None
    # OpenAI's Realtime API (``/v1/realtime``): ``name`` is the query's ``model`` (maybe
    # empty, or an OpenAI model name: the gateway then picks its default STT endpoint).
    realtime: bool = False
    flavour: str = "ga"  # realtime: "beta" for a client that sends OpenAI-Beta: realtime=v1

    def presets(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        for key in PRESET_FIELDS:
            if key in self.query:
                value = self.query[key]
                out[key] = int(value) if key.startswith("sample_rate") and value.isdigit() else value
        return out


def parse_path(path: str) -> Route | None:
    """The route a request path names, or None (an unknown endpoint). The path is
    percent-decoded before it is matched, so an encoded ``..`` or ``/`` is seen as one."""
    parts = urlsplit(path)
    decoded = unquote(parts.path)
    match = _PATH.match(decoded)
    if match:
        return Route(match.group(1), match.group(2), dict(parse_qsl(parts.query)))
    if decoded.rstrip("/") == REALTIME_PATH:
        query = dict(parse_qsl(parts.query))
        return Route("stt", query.get("model", ""), query, realtime=True)
    provider, sep, rest = decoded.lstrip("/").partition("/")
    if provider in DROP_IN and sep:
        kind, allowed = DROP_IN[provider]
        if allowed.fullmatch("/" + rest):
            return Route(kind, provider, dict(parse_qsl(parts.query)),
                         ("/" + rest, strip_query(parts.query, ("api_key",))))
    return None


def find_key(headers: list[tuple[str, str]], subprotocols: list[str],
             query: dict[str, str]) -> tuple[str | None, str | None]:
    """The presented key and the subprotocol to echo (when the key came that way)."""
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() in ("bearer", "token") and token.strip():
                return token.strip(), None
    for name, value in headers:
        if name.lower() in KEY_HEADERS and value.strip():
            return value.strip(), None
    for proto in subprotocols:
        if proto.startswith("bearer."):
            return proto[len("bearer."):], proto
        if proto.startswith(OPENAI_KEY_SUBPROTOCOL) and len(proto) > len(OPENAI_KEY_SUBPROTOCOL):
            return (proto[len(OPENAI_KEY_SUBPROTOCOL):],
                    "realtime" if "realtime" in subprotocols else None)
    if query.get("api_key"):
        return query["api_key"], None
    return None, None


def redact(path: str) -> str:
    """The path with any api_key value hidden, for logs."""
    return re.sub(r"(api_key=)[^&]*", r"\1***", path)


def strip_query(query: str, names: tuple[str, ...]) -> str:
    """A query string without the given parameters (the gateway key must not go upstream)."""
    return "&".join(part for part in query.split("&")
                    if part and part.split("=", 1)[0] not in names)
