"""The providers' voice listings, sans-I/O: the request each one needs and the parse of
answers shaped as each provider's public API reference shows them (fixtures written
here, with the fields those references name)."""

from __future__ import annotations

import pytest

from slng_fast.catalogue import PROVIDER
from slng_fast.providers.cartesia import CARTESIA_VERSION
from slng_fast.providers.voice_lists import (
    LISTINGS,
    ListingError,
    Page,
    cartesia_parse,
    cartesia_request,
    deepgram_parse,
    deepgram_request,
    elevenlabs_parse,
    elevenlabs_request,
    rest_base,
)

ELEVENLABS = {"voices": [
    {"voice_id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel", "category": "premade",
     "labels": {"accent": "american", "description": "calm", "age": "young",
                "gender": "female", "use_case": "narration"},
     "description": None, "preview_url": "https://example.invalid/rachel.mp3",
     "fine_tuning": {"is_allowed_to_fine_tune": True, "language": "en"},
     "verified_languages": [
         {"language": "en", "model_id": "eleven_multilingual_v2", "accent": "american",
          "locale": "en-US", "preview_url": None},
         {"language": "es", "model_id": "eleven_multilingual_v2", "accent": None,
          "locale": None, "preview_url": None}],
     "high_quality_base_model_ids": ["eleven_turbo_v2_5"], "is_owner": False},
    {"voice_id": "cloned123", "name": "My clone", "category": "cloned", "labels": {},
     "fine_tuning": {"language": "de"}, "verified_languages": []},
    {"name": "no id, skipped"},
    "not an object",
]}

CARTESIA = {"data": [
    {"id": "a0e99841-438c-4a64-b679-ae501e7d6091", "name": "Barbershop Man",
     "description": "A rich, deep male voice", "tagline": "", "language": "en",
     "locales": [{"locale": "en-US", "is_native": True}, {"locale": "es-MX",
                                                          "is_native": False}],
     "gender": "masculine", "access": "public", "visibility": "all", "is_owner": False,
     "created_at": "2024-05-01T00:00:00Z"},
    {"id": "f9836c6e-a0bd-460e-9d3c-f7299fa60f94", "name": "Southern Woman",
     "language": "en", "gender": "feminine", "is_owner": False},
    {"id": "nb-1", "name": "Alex", "language": "fr", "gender": "gender_neutral"},
], "has_more": True}

DEEPGRAM = {
    "stt": [{"name": "general", "canonical_name": "nova-3-general", "architecture": "nova-3",
             "languages": ["en", "en-US"], "version": "2025-01-09.0", "uuid": "x",
             "batch": False, "streaming": True, "formatted_output": True}],
    "tts": [
        {"name": "angus", "canonical_name": "aura-angus-en", "architecture": "aura",
         "languages": ["en", "en-IE"], "version": "2024-03-28.0", "uuid": "u1",
         "metadata": {"accent": "Irish", "color": "#BA80F5", "tags": ["masculine"],
                      "image": "https://example.invalid/angus.jpg",
                      "sample": "https://example.invalid/angus.wav"}},
        {"name": "thalia", "canonical_name": "aura-2-thalia-en", "architecture": "aura-2",
         "language": "en", "version": "2025-04-07.0", "uuid": "u2",
         "metadata": {"accent": "American", "tags": ["feminine", "clear", "energetic"]}},
        {"name": "nameless"},
        {"uuid": "no name at all"},
    ],
}


def test_the_rest_base_is_the_websocket_urls_host_and_port():
    assert rest_base("wss://api.elevenlabs.io") == "https://api.elevenlabs.io"
    assert rest_base("ws://127.0.0.1:8123/v1/speak?x=1") == "http://127.0.0.1:8123"
    assert rest_base("wss://[::1]:443/tts/websocket") == "https://[::1]:443"


def test_the_requests_carry_each_providers_path_and_key():
    base = "https://h:1"
    assert elevenlabs_request(base, "k").url == "https://h:1/v1/voices"
    assert elevenlabs_request(base, "k").headers == (("xi-api-key", "k"),)
    assert deepgram_request(base, "k").url == "https://h:1/v1/models"
    assert deepgram_request(base, "k").headers == (("Authorization", "Token k"),)
    first, more = cartesia_request(base, "k"), cartesia_request(base, "k", "v42")
    assert first.url == "https://h:1/voices?limit=100"
    assert more.url == "https://h:1/voices?limit=100&starting_after=v42"
    assert first.headers == (("X-API-Key", "k"), ("Cartesia-Version", CARTESIA_VERSION))
    assert set(LISTINGS) == {"elevenlabs", "cartesia", "deepgram"}


def test_elevenlabs_voices():
    page = elevenlabs_parse(ELEVENLABS, 24000)
    assert page == Page([
        {"id": "21m00Tcm4TlvDq8ikWAM", "name": "Rachel", "languages": ["en-us", "es"],
         "gender": "female", "sample_rate_hz": 24000, "source": PROVIDER},
        {"id": "cloned123", "name": "My clone", "languages": ["de"], "gender": None,
         "sample_rate_hz": 24000, "source": PROVIDER}])
    assert PROVIDER == "provider"


def test_cartesia_voices_and_the_next_page():
    page = cartesia_parse(CARTESIA, 44100)
    assert [(v["id"], v["name"], v["languages"], v["gender"]) for v in page.voices] == [
        ("a0e99841-438c-4a64-b679-ae501e7d6091", "Barbershop Man", ["en-us", "es-mx"], "male"),
        ("f9836c6e-a0bd-460e-9d3c-f7299fa60f94", "Southern Woman", ["en"], "female"),
        ("nb-1", "Alex", ["fr"], "neutral")]
    assert page.cursor == "nb-1"
    assert cartesia_parse({**CARTESIA, "has_more": False}, 44100).cursor is None
    # Versions before the paged answer sent a bare list.
    assert cartesia_parse(CARTESIA["data"], 44100).voices == page.voices
    assert cartesia_parse({"data": [], "has_more": True}, 44100) == Page([], None)


def test_deepgram_voices_are_its_tts_models():
    page = deepgram_parse(DEEPGRAM, 24000)
    assert [(v["id"], v["name"], v["languages"], v["gender"]) for v in page.voices] == [
        ("aura-angus-en", "angus", ["en", "en-ie"], "male"),
        ("aura-2-thalia-en", "thalia", ["en"], "female"),
        ("nameless", "nameless", [], None)]
    assert page.cursor is None and {v["source"] for v in page.voices} == {PROVIDER}
    assert deepgram_parse({"stt": []}, 24000) == Page([])


@pytest.mark.parametrize("parse, body", [
    (elevenlabs_parse, {"detail": {"status": "invalid_api_key"}}),
    (elevenlabs_parse, ["voices"]),
    (cartesia_parse, {"error": "unauthorized"}),
    (cartesia_parse, "nope"),
    (deepgram_parse, ["tts"]),
    (deepgram_parse, {"tts": {"not": "a list"}}),
])
def test_answers_of_another_shape_are_refused(parse, body):
    with pytest.raises(ListingError):
        parse(body, 24000)
