"""The cloud TTS providers' own voice listings, sans-I/O: for each provider the HTTP
request that lists an account's voices and a parser from its JSON answer to catalogue
voices (``"source": "provider"``). The gateway sends the requests and caches the answers
(``gateway/provider_voices.py``); the catalogue shows them in place of the documented
defaults.

The REST base is the provider's configured WebSocket URL with ``ws``/``wss`` turned into
``http``/``https`` (same host and port): true of ElevenLabs, Deepgram and Cartesia, and
what makes the emulators answer too.

- ElevenLabs: ``GET /v1/voices`` with ``xi-api-key``; ``{"voices": [{"voice_id", "name",
  "labels": {"gender", ...}, "verified_languages": [{"language", "locale"}], ...}]}``.
- Cartesia: ``GET /voices?limit=100`` with ``X-API-Key`` and ``Cartesia-Version``;
  ``{"data": [{"id", "name", "language", "locales": [{"locale"}], "gender"}],
  "has_more"}``, paged by ``starting_after=<last id>`` (older versions: a bare list).
- Deepgram: ``GET /v1/models`` with ``Authorization: Token``; its ``tts`` list of models
  (``canonical_name`` is what ``model=`` takes), gender from ``metadata.tags``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from slng_fast.providers.cartesia import CARTESIA_VERSION

SOURCE = "provider"
CARTESIA_PAGE = 100  # Cartesia's largest page
GENDERS = {"male": "male", "female": "female", "masculine": "male", "feminine": "female",
           "neutral": "neutral", "gender_neutral": "neutral"}


class ListingError(ValueError):
    """The answer is not the provider's documented shape."""


@dataclass(frozen=True, slots=True)
class ListRequest:
    url: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Page:
    voices: list[dict[str, Any]]
    cursor: str | None = None  # ask again with it for the next page


@dataclass(frozen=True, slots=True)
class Listing:
    request: Callable[[str, str, str | None], ListRequest]  # (base, key, cursor)
    parse: Callable[[Any, int], Page]  # (answer JSON, the endpoint's sample rate)


def rest_base(ws_url: str) -> str:
    """``wss://host:port/any/path`` -> ``https://host:port``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def voice(id: str, name: Any, languages: list[str], gender: Any,
          sample_rate: int) -> dict[str, Any]:
    """One catalogue voice, as ``catalogue.documented`` shapes one."""
    return {"id": id, "name": name if isinstance(name, str) and name else id,
            "languages": languages,
            "gender": GENDERS.get(gender.lower()) if isinstance(gender, str) else None,
            "sample_rate_hz": sample_rate, "source": SOURCE}


def tags(*candidates: Any) -> list[str]:
    """Language tags, lower-cased, each once, in order; non-strings skipped."""
    out: list[str] = []
    for tag in candidates:
        if isinstance(tag, str) and tag and tag.lower() not in out:
            out.append(tag.lower())
    return out


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def seq(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def items(body: Any, key: str | None) -> list[Any]:
    listing = body if key is None else obj(body).get(key)
    if not isinstance(listing, list):
        raise ListingError(f"expected a list{f' in {key!r}' if key else ''}")
    return listing


# -- ElevenLabs ---------------------------------------------------------------------------

def elevenlabs_request(base: str, key: str, cursor: str | None = None) -> ListRequest:
    return ListRequest(f"{base}/v1/voices", (("xi-api-key", key),))


def elevenlabs_parse(body: Any, sample_rate: int) -> Page:
    out = []
    for raw in items(body, "voices"):
        if not isinstance(raw, dict) or not isinstance(raw.get("voice_id"), str):
            continue
        labels, fine_tuning = obj(raw.get("labels")), obj(raw.get("fine_tuning"))
        verified = [v for v in seq(raw.get("verified_languages")) if isinstance(v, dict)]
        languages = tags(*(v.get("locale") or v.get("language") for v in verified)) \
            or tags(labels.get("language"), fine_tuning.get("language"))
        out.append(voice(raw["voice_id"], raw.get("name"), languages, labels.get("gender"),
                         sample_rate))
    return Page(out)


# -- Cartesia -----------------------------------------------------------------------------

def cartesia_request(base: str, key: str, cursor: str | None = None) -> ListRequest:
    query: dict[str, Any] = {"limit": CARTESIA_PAGE}
    if cursor is not None:
        query["starting_after"] = cursor
    return ListRequest(f"{base}/voices?{urlencode(query)}",
                       (("X-API-Key", key), ("Cartesia-Version", CARTESIA_VERSION)))


def cartesia_parse(body: Any, sample_rate: int) -> Page:
    out = []
    listing = items(body, "data" if isinstance(body, dict) else None)
    for raw in listing:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            continue
        locales = [x.get("locale") for x in seq(raw.get("locales")) if isinstance(x, dict)]
        out.append(voice(raw["id"], raw.get("name"), tags(*locales) or tags(raw.get("language")),
                         raw.get("gender"), sample_rate))
    more = isinstance(body, dict) and body.get("has_more") is True
    last = listing[-1] if listing else None
    cursor = last.get("id") if more and isinstance(last, dict) else None
    return Page(out, cursor if isinstance(cursor, str) else None)


# -- Deepgram -----------------------------------------------------------------------------

def deepgram_request(base: str, key: str, cursor: str | None = None) -> ListRequest:
    return ListRequest(f"{base}/v1/models", (("Authorization", f"Token {key}"),))


def deepgram_parse(body: Any, sample_rate: int) -> Page:
    if not isinstance(body, dict):
        raise ListingError("expected an object with a 'tts' list")
    out = []
    for raw in items(body, "tts") if "tts" in body else []:
        if not isinstance(raw, dict):
            continue
        model = raw.get("canonical_name") or raw.get("name")
        if not isinstance(model, str) or not model:
            continue
        languages = seq(raw.get("languages"))
        marks = seq(obj(raw.get("metadata")).get("tags"))
        gender = next((t for t in marks if isinstance(t, str) and t.lower() in GENDERS), None)
        out.append(voice(model, raw.get("name"), tags(*languages, raw.get("language")),
                         gender, sample_rate))
    return Page(out)


LISTINGS: Mapping[str, Listing] = {
    "elevenlabs": Listing(elevenlabs_request, elevenlabs_parse),
    "cartesia": Listing(cartesia_request, cartesia_parse),
    "deepgram": Listing(deepgram_request, deepgram_parse),
}
