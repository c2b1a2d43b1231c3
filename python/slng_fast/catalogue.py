"""The voice catalogue that ``GET /v1/voices`` answers: for every endpoint the gateway
serves, what a client may ask of it before it connects. Pure: the gateway gathers the
facts from the provider registry (endpoints, the engines' own listings, which upstreams
are configured, the dialects' capabilities) and this module only shapes them. A room of
its own, above ``protocol/`` (whose capability objects it reuses) and ``providers/``.

Where the voices come from (each voice says so in ``source``):
- ``engine``: a built-in engine's own listing, read from its ``ready`` frame by the
  supervisor, so the gateway process never loads the engine's library;
- ``provider``: a cloud provider's own listing for the configured account, fetched and
  cached by the gateway (``gateway/provider_voices.py``, ``providers/voice_lists.py``);
- ``documented``: the product documents (SLNG-hosted family) or the provider's public
  documents (cloud providers without a key, or whose listing could not be fetched),
  from ``providers/documented_voices.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slng_fast.protocol.stt import stt_capabilities
from slng_fast.protocol.tts import tts_capabilities
from slng_fast.providers.documented_voices import STT_LANGUAGES, VOICES, DocumentedVoice
from slng_fast.providers.voice_lists import SOURCE as PROVIDER
from slng_fast.vocabulary import Capabilities, Endpoint

ENGINE = "engine"
DOCUMENTED = "documented"


class UnknownProvider(LookupError):
    """``?provider=`` names no endpoint this gateway serves."""


def catalogue(endpoints: Sequence[Endpoint], *, engine_info: Mapping[str, Mapping[str, Any]],
              capabilities: Mapping[str, Capabilities], available: Mapping[str, bool],
              provider: str | None = None,
              provider_voices: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
              ) -> dict[str, Any]:
    """The JSON body of ``GET /v1/voices[?provider=X]``. ``capabilities``: each TTS
    dialect's, by dialect name; ``available``: by endpoint name, whether a session could
    open now (an engine running, an upstream and credential configured);
    ``provider_voices``: by endpoint name, the voices a provider listed itself (those
    replace the documented ones). Raises
    ``UnknownProvider`` when ``provider`` names none of ``endpoints``."""
    chosen = [e for e in endpoints if provider is None or e.name == provider]
    if provider is not None and not chosen:
        raise UnknownProvider(provider)
    chosen.sort(key=lambda e: (e.kind, e.name))
    return {"endpoints": [
        endpoint_entry(e, engine_info.get(e.name) or {}, capabilities.get(e.dialect),
                       available.get(e.name, False), (provider_voices or {}).get(e.name))
        for e in chosen]}


def endpoint_entry(endpoint: Endpoint, info: Mapping[str, Any],
                   dialect_capabilities: Capabilities | None, available: bool,
                   fetched: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One endpoint: where it is, whether it is up, its capabilities and its voices (TTS)
    or models and languages (STT). ``fetched``: the provider's own listing, if any."""
    built_in = not endpoint.needs_url
    entry: dict[str, Any] = {
        "provider": endpoint.name,
        "kind": endpoint.kind,
        "path": f"/v1/{endpoint.kind}/{endpoint.name}-websocket-stream",
        "built_in": built_in,
        "available": available,
        "sample_rate_hz": endpoint.sample_rate,
    }
    if endpoint.kind == "stt":
        languages = endpoint.languages or STT_LANGUAGES.get(endpoint.name, ())
        model_id = str(info.get("model_id") or endpoint.name)
        entry.update(
            capabilities=stt_capabilities(endpoint.languages),
            languages=list(languages),
            models=[{"id": model_id, "languages": list(languages),
                     "sample_rate_hz": endpoint.sample_rate,
                     "source": ENGINE if built_in else DOCUMENTED}])
        return entry
    if built_in:
        voices, source = engine_voices(info, endpoint.sample_rate), ENGINE
    elif fetched is not None:
        voices, source = [dict(v) for v in fetched], PROVIDER
    else:
        voices = [documented(v, endpoint.sample_rate) for v in VOICES.get(endpoint.name, ())]
        source = DOCUMENTED
    assert dialect_capabilities is not None, f"no capabilities for {endpoint.dialect}"
    entry.update(
        default_voice=endpoint.default_voice,
        voices_source=source,
        capabilities=tts_capabilities(dialect_capabilities, endpoint.voices,
                                      endpoint.languages),
        voices=voices)
    if built_in and isinstance(info.get("variants"), list):
        # eSpeak's "voice+variant" names: any voice with any of these.
        entry["variants"] = [v["id"] for v in info["variants"]
                             if isinstance(v, dict) and isinstance(v.get("id"), str)]
    return entry


def documented(voice: DocumentedVoice, sample_rate: int) -> dict[str, Any]:
    return {"id": voice.id, "name": voice.name, "languages": list(voice.languages),
            "gender": voice.gender, "sample_rate_hz": sample_rate, "source": DOCUMENTED}


def engine_voices(info: Mapping[str, Any], sample_rate: int) -> list[dict[str, Any]]:
    """A built-in engine's listing (its ``ready`` frame's ``voices``) as catalogue
    voices; entries without a string id are skipped, an unknown gender is None."""
    listing = info.get("voices")
    out: list[dict[str, Any]] = []
    for raw in listing if isinstance(listing, list) else []:
        if isinstance(raw, str):
            raw = {"id": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            continue
        languages = raw.get("languages")
        out.append({
            "id": raw["id"],
            "name": raw.get("name") if isinstance(raw.get("name"), str) else raw["id"],
            "languages": [x for x in languages if isinstance(x, str)]
            if isinstance(languages, list) else [],
            "gender": raw["gender"] if isinstance(raw.get("gender"), str)
            and raw["gender"] else None,
            "sample_rate_hz": sample_rate,
            "source": ENGINE,
        })
    return out
