"""Endpoint names to dialects and defaults (PROTOCOL.md section 1 and the product
documents). Upstream URLs and credentials come from the config; the built-in engines'
URLs from the supervisor that started them."""

from __future__ import annotations

from typing import Any

from slng_fast import errors
from slng_fast.config import Config
from slng_fast.errors import GatewayError
from slng_fast.providers.base import Endpoint, voice_ids
from slng_fast.providers.slng import SlngDialect
from slng_fast.providers.unified import UnifiedSttDialect

INDIC_LANGUAGES = ("hi", "bn", "ta", "te", "mr", "gu", "kn", "ml")

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (
    Endpoint("orpheus", "tts", "slng", "tara", ("tara", "luna", "stella", "athena", "hera")),
    Endpoint("orpheus-indic", "tts", "slng", "kanak", ("kanak",), INDIC_LANGUAGES),
    Endpoint("kokoro", "tts", "slng", "af", ("af", "af_bella", "af_sky", "am_adam")),
    Endpoint("cosyvoice", "tts", "slng", "emma", ("emma",), sample_rate=22050),
    Endpoint("chatterbox", "tts", "slng", "nova", ("nova", "echo", "sky", "zara", "max")),
    Endpoint("xtts", "tts", "slng", "Claribel Dervla", ("Claribel Dervla",)),
    Endpoint("espeak", "tts", "slng", "en", (), sample_rate=22050, needs_url=False),
    Endpoint("pocketsphinx", "stt", "unified", None, (), ("en",), sample_rate=16000,
             needs_url=False),
)}


def known(kind: str) -> list[str]:
    return sorted(name for name, e in ENDPOINTS.items() if e.kind == kind)


class ProviderRegistry:
    """Resolves an endpoint name to a fresh dialect for one session."""

    def __init__(self, config: Config, engine_urls: dict[str, str] | None = None,
                 engine_info: dict[str, dict[str, Any]] | None = None) -> None:
        self.config = config
        # Live views, not copies: the supervisor fills them as engines (re)start.
        self.engine_urls = engine_urls if engine_urls is not None else {}
        self.engine_info = engine_info if engine_info is not None else {}

    def endpoint(self, kind: str, name: str) -> Endpoint | None:
        endpoint = ENDPOINTS.get(name)
        if endpoint is None or endpoint.kind != kind:
            return None
        info = self.engine_info.get(name)
        if info:
            voices = voice_ids(info.get("voices")) or endpoint.voices
            languages = tuple(info.get("languages") or endpoint.languages)
            rate = int(info.get("sample_rate") or endpoint.sample_rate)
            endpoint = Endpoint(endpoint.name, endpoint.kind, endpoint.dialect,
                                endpoint.default_voice, voices, languages, rate,
                                needs_url=endpoint.needs_url)
        return endpoint

    def upstream(self, endpoint: Endpoint) -> tuple[str, str | None]:
        """The upstream URL and credential, or provider_unavailable."""
        provider = self.config.providers.get(endpoint.name)
        url = provider.url if provider and provider.url else self.engine_urls.get(endpoint.name)
        if not url:
            url = endpoint.default_url
        if not url:
            raise GatewayError(errors.PROVIDER_UNAVAILABLE,
                               f"{endpoint.name} has no upstream configured; set "
                               f"[providers.{endpoint.name}] url in the config file")
        return url, provider.api_key if provider else None

    def dialect(self, endpoint: Endpoint) -> Any:
        url, key = self.upstream(endpoint)
        if endpoint.dialect == "slng":
            return SlngDialect(endpoint, url, key)
        if endpoint.dialect == "unified":
            return UnifiedSttDialect(endpoint, url, key)
        raise GatewayError(errors.PROVIDER_UNAVAILABLE, f"no dialect {endpoint.dialect!r}")
