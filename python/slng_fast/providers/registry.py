"""Endpoint names to dialects and defaults (PROTOCOL.md section 1 and the product
documents). Upstream URLs and credentials come from the config; the built-in engines'
URLs from the supervisor that started them."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from slng_fast import errors
from slng_fast.config import Config
from slng_fast.errors import GatewayError
from slng_fast.providers.base import voice_ids
from slng_fast.vocabulary import Capabilities, Endpoint

# Dialect name -> "module:class"; imported when first used, one module per dialect.
DIALECTS: dict[str, str] = {
    "slng": "slng_fast.providers.slng:SlngDialect",
    "unified": "slng_fast.providers.unified:UnifiedSttDialect",
    "elevenlabs": "slng_fast.providers.elevenlabs:ElevenLabsDialect",
    "deepgram": "slng_fast.providers.deepgram:DeepgramDialect",
    "cartesia": "slng_fast.providers.cartesia:CartesiaDialect",
    "kyutai": "slng_fast.providers.kyutai:KyutaiDialect",
    "whisper": "slng_fast.providers.whisper:WhisperDialect",
}

INDIC_LANGUAGES = ("hi", "bn", "ta", "te", "mr", "gu", "kn", "ml")

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (
    Endpoint("orpheus", "tts", "slng", "tara", ("tara", "luna", "stella", "athena", "hera")),
    Endpoint("orpheus-indic", "tts", "slng", "kanak", ("kanak",), INDIC_LANGUAGES),
    Endpoint("kokoro", "tts", "slng", "af", ("af", "af_bella", "af_sky", "am_adam")),
    Endpoint("cosyvoice", "tts", "slng", "emma", ("emma",), sample_rate=22050),
    Endpoint("chatterbox", "tts", "slng", "nova", ("nova", "echo", "sky", "zara", "max")),
    Endpoint("xtts", "tts", "slng", "Claribel Dervla", ("Claribel Dervla",)),
    Endpoint("elevenlabs", "tts", "elevenlabs", "21m00Tcm4TlvDq8ikWAM", (),
             default_url="wss://api.elevenlabs.io", key_env="ELEVENLABS_API_KEY"),
    Endpoint("deepgram", "tts", "deepgram", "aura-asteria-en", (),
             default_url="wss://api.deepgram.com", key_env="DEEPGRAM_API_KEY"),
    Endpoint("cartesia", "tts", "cartesia", "694f9389-aac1-45b6-b726-9d9369183238", (),
             default_url="wss://api.cartesia.ai", key_env="CARTESIA_API_KEY"),
    Endpoint("kyutai", "stt", "kyutai", None, (), sample_rate=24000,
             key_env="KYUTAI_API_KEY"),
    Endpoint("whisper", "stt", "whisper", None, (), sample_rate=16000),
    Endpoint("espeak", "tts", "slng", "en", (), sample_rate=22050, needs_url=False),
    Endpoint("piper", "tts", "slng", "en_US-joe-medium", ("en_US-joe-medium",), ("en",),
             sample_rate=22050, needs_url=False),
    Endpoint("pocketsphinx", "stt", "unified", None, (), ("en",), sample_rate=16000,
             needs_url=False),
)}


def known(kind: str) -> list[str]:
    return sorted(name for name, e in ENDPOINTS.items() if e.kind == kind)


class ProviderRegistry:
    """Resolves an endpoint name to a fresh dialect for one session."""

    def __init__(self, config: Config, engine_urls: dict[str, str] | None = None,
                 engine_info: dict[str, dict[str, Any]] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.environ = environ if environ is not None else os.environ
        self.config = config
        # Live views, not copies: the supervisor fills them as engines (re)start.
        self.engine_urls = engine_urls if engine_urls is not None else {}
        self.engine_info = engine_info if engine_info is not None else {}
        # An engine's endpoint as its listing describes it, built once per listing (an
        # engine that restarts gets a new one): not a new one per session (1-2 KB each).
        self._described: dict[str, tuple[dict[str, Any], Endpoint]] = {}

    def endpoint(self, kind: str, name: str) -> Endpoint | None:
        endpoint = ENDPOINTS.get(name)
        if endpoint is None or endpoint.kind != kind:
            return None
        info = self.engine_info.get(name)
        if info:
            described = self._described.get(name)
            if described is not None and described[0] is info:
                return described[1]
            voices = voice_ids(info.get("voices")) or endpoint.voices
            languages = tuple(info.get("languages") or endpoint.languages)
            rate = int(info.get("sample_rate") or endpoint.sample_rate)
            endpoint = Endpoint(endpoint.name, endpoint.kind, endpoint.dialect,
                                endpoint.default_voice, voices, languages, rate,
                                needs_url=endpoint.needs_url, key_env=endpoint.key_env)
            self._described[name] = (info, endpoint)
        return endpoint

    def upstream(self, endpoint: Endpoint) -> tuple[str, str | None]:
        """The upstream URL and credential, or provider_unavailable. The config file's
        ``[providers.<name>]`` wins over the environment (``<NAME>_URL``, ``key_env``)."""
        provider = self.config.providers.get(endpoint.name)
        env_name = endpoint.name.upper().replace("-", "_")
        url = (provider.url if provider and provider.url else None) \
            or self.engine_urls.get(endpoint.name) \
            or self.environ.get(f"{env_name}_URL") or endpoint.default_url
        if not url:
            raise GatewayError(errors.PROVIDER_UNAVAILABLE,
                               f"{endpoint.name} has no upstream configured; set "
                               f"[providers.{endpoint.name}] url in the config file")
        key = provider.api_key if provider and provider.api_key else None
        if key is None and endpoint.key_env:
            key = self.environ.get(endpoint.key_env) or None
        if key is None and endpoint.key_env and endpoint.default_url:  # a cloud provider
            raise GatewayError(errors.PROVIDER_UNAVAILABLE,
                               f"{endpoint.name} has no credentials; set {endpoint.key_env} or "
                               f"[providers.{endpoint.name}] api_key in the config file")
        return url, key

    def dialect(self, endpoint: Endpoint) -> Any:
        url, key = self.upstream(endpoint)
        return self.dialect_class(endpoint)(endpoint, url, key)

    def dialect_class(self, endpoint: Endpoint) -> Any:
        path = DIALECTS.get(endpoint.dialect)
        if path is None:
            raise GatewayError(errors.PROVIDER_UNAVAILABLE, f"no dialect {endpoint.dialect!r}")
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint served, with what the running engines say of themselves."""
        out = []
        for name, entry in ENDPOINTS.items():
            endpoint = self.endpoint(entry.kind, name)
            assert endpoint is not None
            out.append(endpoint)
        return out

    def available(self, endpoint: Endpoint) -> bool:
        """Whether a session could open now: a built-in engine running, or an upstream
        (and, for a cloud provider, a credential) configured."""
        try:
            self.upstream(endpoint)
        except GatewayError:
            return False
        return True

    def capabilities(self) -> dict[str, Capabilities]:
        """Each TTS dialect's capabilities, by dialect name (a class attribute: no
        dialect is made, so no upstream or credential is needed)."""
        out: dict[str, Capabilities] = {}
        for endpoint in ENDPOINTS.values():
            if endpoint.kind == "tts" and endpoint.dialect not in out:
                out[endpoint.dialect] = self.dialect_class(endpoint).capabilities
        return out
